"""Any model's input is checked against its published JSON Schema before it is paid for."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_eachlabs import schema
from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.integration.test_operators import context


@pytest.fixture(autouse=True)
def fresh_schema_cache() -> None:
    schema._schemas.clear()


def generic(model: str, input: dict[str, Any], **kwargs: Any) -> EachlabsPredictionOperator:
    return EachlabsPredictionOperator(
        task_id="t", model=model, input=input, poll_interval=0.05, deferrable=False, **kwargs
    )


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({"image": "https://cdn.example.com/a.png", "scale": 9}, "Invalid input.scale=9: must be at most 4"),
        (
            {"image": "https://cdn.example.com/a.png", "scale": "2"},
            "Invalid input.scale='2': must be of type integer",
        ),
        (
            {"image": "https://cdn.example.com/a.png", "scael": 2},
            "Invalid input.scael=2: is not an input of this model",
        ),
        ({"scale": 2}, "Invalid input.image=None: is required"),
    ],
)
def test_bad_generic_input_fails_at_once_naming_path_value_and_rule_with_zero_creates(
    eachlabs_conn: EachlabsSimulator, input: dict[str, Any], message: str
):
    with pytest.raises(AirflowFailException) as caught:
        generic("upscale-image", input).execute(context())
    assert str(caught.value).startswith(message)
    assert str(caught.value).endswith("(the model's published input schema)")
    assert eachlabs_conn.counters.create_requests == 0
    assert eachlabs_conn.counters.model_gets == 1


def test_the_schema_is_fetched_once_per_model_per_process(eachlabs_conn: EachlabsSimulator):
    image = eachlabs_conn.add_file(_png())
    for words in (3, 5):
        result = generic("describe-image", {"image": image, "max_words": words}).execute(context())
        assert result["status"] == "success"
    generic("upscale-image", {"image": image}).execute(context())
    assert eachlabs_conn.counters.model_gets == 2  # describe-image once, upscale-image once
    assert eachlabs_conn.counters.create_requests == 3


def test_when_the_schema_cannot_be_read_the_input_is_sent_and_the_log_says_so(
    eachlabs_conn: EachlabsSimulator, capsys: pytest.CaptureFixture[str]
):
    eachlabs_conn.inject("model", "status", times=9, status=503)
    result = generic("echo-test", {"prompt": "hello"}).execute(context())
    assert result["status"] == "success"
    assert "Could not read the input schema of model echo-test" in capsys.readouterr().out
    assert eachlabs_conn.counters.create_requests == 1


def test_flux_fill_keeps_its_own_rules_and_asks_for_no_schema(eachlabs_conn: EachlabsSimulator):
    from tests.integration.test_operators import fill

    fill().execute(context())
    assert eachlabs_conn.counters.model_gets == 0


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 90)).save(buffer, format="PNG")
    return buffer.getvalue()
