"""The "Eachlabs" button on a task: it opens the task's Eachlabs tab in the Airflow UI.

The API's own prediction URL needs the key in a header, so a browser gets a 401 there; the tab
(the provider's UI plugin) shows the prediction with the key kept on the server. The link is built
from the task instance alone, without reading XCom, so it costs nothing and logs nothing when a task
failed before it created a prediction. Airflow computes operator links on the worker when the task
ends, so the path honours the worker's ``[api] base_url`` (its sub-path included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

# The UI plugin's task-instance view answers at this url_route.
TAB_ROUTE = "eachlabs"


def task_tab_path(dag_id: str, run_id: str, task_id: str, map_index: int, base_url: str) -> str:
    """The UI path of a task instance's Eachlabs tab, below ``base_url``'s path."""
    base = urlsplit(base_url).path.rstrip("/") if "://" in base_url else base_url.rstrip("/")
    path = (
        f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id, safe='')}"
    )
    if map_index >= 0:
        path += f"/mapped/{map_index}"
    return f"{path}/plugin/{TAB_ROUTE}"


class EachlabsPredictionLink(BaseOperatorLink):
    """Link to the task's Eachlabs tab: the prediction, its images, cost and errors."""

    name = "Eachlabs prediction"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.configuration import conf

        base_url = conf.get("api", "base_url", fallback="/") or "/"
        return task_tab_path(ti_key.dag_id, ti_key.run_id, ti_key.task_id, ti_key.map_index, base_url)
