"""The batch benchmark's DAG for the batch operator: one ``FluxFillBatchOperator`` task over a
manifest of generated images, on a worker or deferred (``BENCH_DEFERRABLE``).

As in ``bench_batch_fill``, the simulator's predict time is scaled down from flux-fill-pro's 9 s, so
the model's expected time is scaled with it (``BENCH_EXPECTED_SECONDS``). The subclass adds what the
benchmark reads and no user needs: the task process's peak RSS, in the XCom summary.
"""

from __future__ import annotations

import os
import resource
from typing import Any

from airflow.sdk import DAG

from airflow_provider_eachlabs import polling
from airflow_provider_eachlabs.operators.batch import FluxFillBatchOperator

polling.MODEL_EXPECTED_SECONDS["flux-fill-pro"] = float(os.environ.get("BENCH_EXPECTED_SECONDS", "9"))


class MeasuredBatch(FluxFillBatchOperator):
    def _finish(self, context: Any, config: Any, summary: dict[str, Any]) -> dict[str, Any]:
        result = super()._finish(context, config, summary)
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        return result


with DAG(dag_id="bench_batch_operator", schedule=None, catchup=False, tags=["benchmark"]) as dag:
    MeasuredBatch(
        task_id="fill",
        items_path=os.environ.get("BENCH_MANIFEST", "/nonexistent.jsonl"),
        defaults={"prompt": "a seamless continuation of the landscape", "output_format": "png"},
        output_path=os.environ.get("BENCH_OUTPUT_DIR", "/tmp/bench-batch-output"),
        max_in_flight=int(os.environ.get("BENCH_MAX_IN_FLIGHT", "10")),
        creates_per_minute=int(os.environ.get("BENCH_PER_MINUTE", "100")),
        deferrable=os.environ.get("BENCH_DEFERRABLE", "false") == "true",
    )
