"""The Eachlabs UI plugin: a tab on every task instance, and a page of every fill in the navigation.

Airflow loads entry-point plugins in every process (each task, the DAG processor, the scheduler,
the triggerer), so importing this module costs only the plugin class: the FastAPI app, its
templates and every HTTP client are built the first time the api-server asks for
``fastapi_apps``. Nothing else asks for it, so workers and the DAG processor never pay for it. This
lazy property is used instead of a check of ``sys.argv`` for "api-server" (the edge3 provider's
guard) because that check also hides the views from ``airflow plugins`` and from an api-server
started any other way.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_eachlabs.links import TAB_ROUTE

URL_PREFIX = "/eachlabs"


class EachlabsPlugin(AirflowPlugin):
    """Registered through the ``airflow.plugins`` entry point (the provider info's ``plugins`` key is
    ignored while ``[core] lazy_discover_providers`` is on, the default)."""

    name = "eachlabs"
    # Relative hrefs (no leading slash): the UI resolves them below [api] base_url, sub-path included.
    external_views = [
        {
            "name": "Eachlabs",
            "href": "eachlabs/ti/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}",
            "destination": "task_instance",
            "url_route": TAB_ROUTE,
        },
        {
            "name": "Eachlabs fills",
            "href": "eachlabs/",
            "destination": "nav",
            "url_route": "eachlabs-fills",
            "category": "browse",
        },
    ]

    @cached_property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        from airflow_provider_eachlabs.plugin.app import create_app

        return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Eachlabs"}]

    @cached_property
    def fastapi_root_middlewares(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The UI's Test button for an Eachlabs connection (``connection_test``: Airflow before
        apache/airflow#73298 answers it 400)."""
        from airflow_provider_eachlabs.plugin.connection_test import EachlabsConnectionTestMiddleware

        return [{"middleware": EachlabsConnectionTestMiddleware, "name": "Eachlabs connection test"}]
