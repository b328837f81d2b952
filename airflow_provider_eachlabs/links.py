"""The "Eachlabs prediction" button on a task: the prediction's URL, read from XCom.

The operator pushes ``prediction_url`` right after the create, so the link works while the task
waits and after it fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

from airflow_provider_eachlabs.results import PREDICTION_URL_KEY

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class EachlabsPredictionLink(BaseOperatorLink):
    """Link to the Eachlabs prediction a task created."""

    name = "Eachlabs prediction"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        url = XCom.get_value(ti_key=ti_key, key=PREDICTION_URL_KEY)
        return str(url) if url else ""
