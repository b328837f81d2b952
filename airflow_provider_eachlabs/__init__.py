"""Apache Airflow provider for the Eachlabs prediction API.

Kept free of heavy imports: Airflow reads ``get_provider_info`` through the entry point in every
component, and DAG files import the operators below this package at every parse.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_INTEGRATION = "Eachlabs"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager, declaratively (no hook import needed)."""
    return {
        "package-name": "airflow-provider-eachlabs",
        "name": "Eachlabs",
        "description": "Eachlabs predictions (flux-fill-pro inpainting, any other model) as Airflow tasks.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://docs.eachlabs.ai",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_provider_eachlabs.operators.prediction",
                    "airflow_provider_eachlabs.operators.flux_fill",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_eachlabs.sensors.prediction"],
            }
        ],
        "hooks": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_eachlabs.hooks.eachlabs"],
            }
        ],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_eachlabs.triggers.prediction"],
            }
        ],
        "task-decorators": [
            {"class-name": "airflow_provider_eachlabs.decorators.eachlabs.eachlabs_task", "name": "eachlabs"}
        ],
        "extra-links": ["airflow_provider_eachlabs.links.EachlabsPredictionLink"],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_eachlabs.hooks.eachlabs.EachlabsHook",
                "hook-name": "Eachlabs",
                "connection-type": "eachlabs",
                "conn-fields": {
                    "timeout": {
                        "label": "Request timeout (seconds)",
                        "description": "Time allowed for one HTTP request before it counts as failed.",
                        "schema": {"type": ["number", "null"], "default": 30, "minimum": 1},
                    },
                    "max_retries": {
                        "label": "Retries per request",
                        "description": "Retries for 429, 5xx, connection errors and timeouts.",
                        "schema": {"type": ["integer", "null"], "default": 5, "minimum": 0},
                    },
                    "backoff_max": {
                        "label": "Longest wait between retries (seconds)",
                        "schema": {"type": ["number", "null"], "default": 60, "minimum": 1},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login", "extra"],
                    "relabeling": {"host": "API host", "password": "API Key"},
                    "placeholders": {
                        "host": "https://api.eachlabs.ai",
                        "password": "Eachlabs API key",
                    },
                },
            }
        ],
    }
