"""What the provider's tasks leave in XCom: the same small shape from every operator and the sensor.

Ids, URLs, paths and numbers, never image bytes: XCom lives in the metadata database.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_eachlabs.api import Prediction

# Pushed right after the create, before any waiting, so links and pages work while the task waits.
PREDICTION_ID_KEY = "prediction_id"
PREDICTION_URL_KEY = "prediction_url"
# A model's output that is not a file (an object, a list, text) is kept in XCom up to this size.
OUTPUT_XCOM_MAX_BYTES = 4096


def prediction_summary(prediction: Prediction) -> dict[str, Any]:
    """The small result every task of this provider returns.

    ``output_urls`` lists every file the model made. An output that is more than one URL (an object,
    text) is kept as ``output`` when its JSON is at most ``OUTPUT_XCOM_MAX_BYTES``; beyond that,
    ``output_note`` says where to read it.
    """
    metrics = prediction.metrics
    summary: dict[str, Any] = {
        "prediction_id": prediction.id,
        "status": prediction.status,
        "output_url": prediction.output_url,
        "output_urls": prediction.output_urls,
        "predict_time": metrics.get("predict_time"),
        "cost": metrics.get("cost"),
        "metrics": metrics,
    }
    output = prediction.output
    if output is not None and not (isinstance(output, str) and output == prediction.output_url):
        size = len(json.dumps(output, default=str).encode())
        if size <= OUTPUT_XCOM_MAX_BYTES:
            summary["output"] = output
        else:
            summary["output_note"] = (
                f"the output is {size} bytes of JSON, more than the {OUTPUT_XCOM_MAX_BYTES} kept in XCom: "
                f"read it with EachlabsHook().get_prediction({prediction.id!r}).output"
            )
    return summary


def report_success(context: Context, prediction: Prediction, log: Any) -> None:
    """Log a success with its cost once per prediction, not once per try.

    A try that re-attaches to a prediction an earlier try already reported (its store failed, say)
    says so instead, so that summing the costs in the logs counts each prediction once.
    """
    from airflow_provider_eachlabs.record import TaskRecord

    record = TaskRecord.load(context)
    if prediction.id in record.reported_ids:
        log.info("Prediction %s succeeded (its cost was reported by an earlier try)", prediction.id)
        return
    metrics = prediction.metrics
    log.info(
        "Prediction %s succeeded (predict time %ss, cost %s USD)",
        prediction.id,
        metrics.get("predict_time", "unreported"),
        metrics.get("cost", "unreported"),
    )
    record.reported_ids.append(prediction.id)
    record.save(context)
