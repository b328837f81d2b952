"""flux-fill-pro's input rules, at every boundary, with messages naming field, value and rule."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_eachlabs.inputs import (
    MAX_PROMPT_CHARS,
    RENDERED_NOTHING,
    EachlabsInputError,
    FluxFillInput,
)

URL = "https://cdn.example.com/scene.png"
API_HOST = "http://127.0.0.1:8765"


def validate(**overrides: Any) -> FluxFillInput:
    fields: dict[str, Any] = {"prompt": "a meadow", "image": URL, **overrides}
    return FluxFillInput.validate(api_host=API_HOST, **fields)


def test_defaults_are_the_model_pages():
    assert validate().to_api() == {
        "prompt": "a meadow",
        "image": URL,
        "steps": 50,
        "prompt_upsampling": False,
        "guidance": 3,
        "safety_tolerance": 2,
        "output_format": "jpg",
    }


def test_optional_fields_are_sent_when_given():
    body = validate(mask=URL, seed=7).to_api()
    assert (body["mask"], body["seed"]) == (URL, 7)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 1),
        ("steps", 50),
        ("guidance", 2),
        ("guidance", 5),
        ("guidance", 3.5),
        ("safety_tolerance", 1),
        ("safety_tolerance", 6),
        ("output_format", "png"),
        ("output_format", "jpg"),
        ("seed", 0),
        ("seed", -5),
        ("prompt_upsampling", True),
    ],
)
def test_values_at_and_inside_the_boundaries_pass(field: str, value: Any):
    assert getattr(validate(**{field: value}), field) == value


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("steps", 0, "must be from 1 to 50 inclusive"),
        ("steps", 51, "must be from 1 to 50 inclusive"),
        ("steps", 10.0, "must be an integer from 1 to 50 inclusive"),
        ("steps", True, "must be an integer from 1 to 50 inclusive"),
        ("steps", "ten", "must be an integer from 1 to 50 inclusive"),
        ("guidance", 1.99, "must be from 2 to 5 inclusive"),
        ("guidance", 5.01, "must be from 2 to 5 inclusive"),
        ("guidance", True, "must be a number from 2 to 5 inclusive"),
        ("guidance", float("nan"), "must be a finite number from 2 to 5 inclusive"),
        ("guidance", None, "must be a number from 2 to 5 inclusive"),
        ("safety_tolerance", 0, "must be from 1 to 6 inclusive"),
        ("safety_tolerance", 7, "must be from 1 to 6 inclusive"),
        ("safety_tolerance", False, "must be an integer from 1 to 6 inclusive"),
        ("seed", True, "must be an integer"),
        ("seed", 1.5, "must be an integer"),
        ("prompt_upsampling", 1, "must be a boolean (true or false)"),
        ("prompt_upsampling", "yes", "must be a boolean (true or false)"),
        ("output_format", "jpeg", "must be one of jpg, png"),
        ("output_format", "webp", "must be one of jpg, png"),
        ("output_format", "PNG", "must be one of jpg, png"),
        ("prompt", "", f"must be a non-empty string; {RENDERED_NOTHING}"),
        ("prompt", "   ", f"must be a non-empty string; {RENDERED_NOTHING}"),
        ("prompt", "None", f"must be a non-empty string; {RENDERED_NOTHING}"),
        ("prompt", None, "must be a non-empty string"),
        ("prompt", 42, "must be a non-empty string"),
        ("image", "", f"must be a non-empty string; {RENDERED_NOTHING}"),
        ("image", None, "must be a non-empty string"),
    ],
)
def test_every_rule_fails_with_field_value_and_rule(field: str, value: Any, rule: str):
    with pytest.raises(EachlabsInputError) as caught:
        validate(**{field: value})
    assert str(caught.value) == f"Invalid {field}={value!r}: {rule}"
    assert (caught.value.field, caught.value.rule) == (field, rule)


PUBLIC_URL_RULE = "must be a public https:// URL (no data: URIs, localhost or private addresses)"


@pytest.mark.parametrize("field", ["image", "mask"])
@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.example.com/a.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "https://localhost/a.png",
        "https://LOCALHOST./a.png",
        "https://printer.local/a.png",
        "https://127.0.0.1/a.png",
        "https://127.8.9.10/a.png",
        "https://[::1]/a.png",
        "https://10.0.0.4/a.png",
        "https://172.16.5.5/a.png",
        "https://192.168.1.20/a.png",
        "https://169.254.169.254/latest/meta-data",
        "https://0.0.0.0/a.png",
        "https://[fd00::1]/a.png",
        "https:///no-host.png",
        "http://127.0.0.1:9999/files/x.png",
    ],
)
def test_urls_the_api_must_not_fetch_are_refused(field: str, url: str):
    with pytest.raises(EachlabsInputError) as caught:
        validate(**{field: url})
    assert str(caught.value) == f"Invalid {field}={url!r}: {PUBLIC_URL_RULE}"


def test_the_configured_api_hosts_own_files_are_allowed_even_on_loopback():
    own = f"{API_HOST}/files/uploads/abc.png"
    assert validate(image=own, mask=own).image == own


def test_public_https_by_name_or_public_ip_passes():
    assert validate(image="https://8.8.8.8/a.png").image == "https://8.8.8.8/a.png"


@pytest.mark.parametrize("source", ["/data/scene.png", "file:///data/scene.png", "s3://bucket/scene.png"])
def test_files_and_object_storage_are_left_for_upload(source: str):
    assert validate(image=source).image == source


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        ("steps", "30", 30),
        ("steps", " 1 ", 1),
        ("guidance", "2.5", 2.5),
        ("guidance", "4", 4),
        ("safety_tolerance", "6", 6),
        ("seed", "123", 123),
        ("prompt_upsampling", "true", True),
        ("prompt_upsampling", "False", False),
    ],
)
def test_rendered_template_text_is_read_as_the_value_it_spells(field: str, text: str, value: Any):
    checked = getattr(validate(**{field: text}), field)
    assert checked == value and type(checked) is type(value)


@pytest.mark.parametrize(("field", "text"), [("steps", "51"), ("guidance", "1.5"), ("steps", "3.0")])
def test_rendered_text_still_obeys_the_range(field: str, text: str):
    with pytest.raises(EachlabsInputError, match=f"Invalid {field}='{text}'"):
        validate(**{field: text})


def test_a_prompt_longer_than_the_cap_is_refused_naming_the_field_a_shortened_value_and_the_rule():
    assert validate(prompt="x" * MAX_PROMPT_CHARS).prompt == "x" * MAX_PROMPT_CHARS
    with pytest.raises(EachlabsInputError) as caught:
        validate(prompt="x" * (MAX_PROMPT_CHARS + 1))
    assert str(caught.value) == (
        f"Invalid prompt='{'x' * 116}...: must be at most 10,000 characters (it has 10,001)"
    )
