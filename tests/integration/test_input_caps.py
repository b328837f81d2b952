"""A prompt past the provider's cap fails the task before anything is uploaded or bought."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_eachlabs.inputs import MAX_PROMPT_CHARS
from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.integration.test_operators import context, fill

TOO_LONG = "a meadow " * (MAX_PROMPT_CHARS // 9 + 1)


def test_a_prompt_past_the_cap_buys_nothing(eachlabs_conn: EachlabsSimulator):
    rule = rf"must be at most 10,000 characters \(it has {len(TOO_LONG):,}\)"
    with pytest.raises(AirflowFailException, match=rf"^Invalid prompt='a meadow a meadow .*\.\.\.: {rule}$"):
        fill(prompt=TOO_LONG).execute(context())
    generic = EachlabsPredictionOperator(task_id="any", model="echo-test", input={"prompt": TOO_LONG})
    with pytest.raises(AirflowFailException, match=rf"^Invalid input\.prompt='a meadow .*\.\.\.: {rule}$"):
        generic.execute(context())
    assert (eachlabs_conn.counters.uploads, eachlabs_conn.counters.create_requests) == (0, 0)
