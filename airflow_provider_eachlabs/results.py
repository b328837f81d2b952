"""What the provider's tasks leave in XCom: the same small shape from every operator and the sensor.

Ids, URLs, paths and numbers, never image bytes: XCom lives in the metadata database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_eachlabs.api import Prediction

# Pushed right after the create, before any waiting, so links and pages work while the task waits.
PREDICTION_ID_KEY = "prediction_id"
PREDICTION_URL_KEY = "prediction_url"


def prediction_summary(prediction: Prediction) -> dict[str, Any]:
    """The small result every task of this provider returns."""
    metrics = prediction.metrics
    return {
        "prediction_id": prediction.id,
        "status": prediction.status,
        "output_url": prediction.output_url,
        "predict_time": metrics.get("predict_time"),
        "cost": metrics.get("cost"),
        "metrics": metrics,
    }
