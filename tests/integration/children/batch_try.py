"""One try of a batch in a process of its own, so a test can kill it for real (SIGKILL) mid-batch.

``python -m tests.integration.children.batch_try OPERATOR_KWARGS_JSON``

The task instance is always the same one (``batch_dag`` / ``run-1`` / ``fill_batch``), so a later try
in the test process finds this try's journal. Prints ``RESULT <json>`` or ``ERROR <class>: <message>``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any


class BatchTI:
    dag_id, run_id, task_id, map_index = "batch_dag", "run-1", "fill_batch", -1

    def __init__(self) -> None:
        self.start_date = datetime.now(timezone.utc)
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def main() -> int:
    from airflow_provider_eachlabs.operators.batch import FluxFillBatchOperator

    operator = FluxFillBatchOperator(task_id="fill_batch", **json.loads(sys.argv[1]))
    try:
        result = operator.execute({"ti": BatchTI()})
    except Exception as error:
        print(f"ERROR {type(error).__name__}: {error}", flush=True)
        return 1
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
