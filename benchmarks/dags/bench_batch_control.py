"""The batch benchmark's control: the same task shape as a fill, with no provider code in it.

Each mapped task runs on a worker, defers to Airflow's own ``TimeDeltaTrigger`` for the predict
time, and resumes on a worker to finish, in the same pool, with the same retries. What this DAG's
run costs over its pool-bound ideal is what Airflow itself adds to a deferrable task on the machine;
``bench_batch.py --control`` runs it so a fill's makespan can be read against that floor.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from airflow.sdk import DAG, BaseOperator, task


class DeferredWait(BaseOperator):
    """Run, defer for ``seconds``, resume: a fill's life without upload, create, polls or download."""

    def __init__(self, *, item: str, seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.item = item
        self.seconds = seconds

    def execute(self, context: Any) -> None:
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        self.defer(
            trigger=TimeDeltaTrigger(datetime.timedelta(seconds=self.seconds)), method_name="execute_complete"
        )

    def execute_complete(self, context: Any, event: Any = None) -> str:
        return self.item


with DAG(dag_id="bench_batch_control", schedule=None, catchup=False, tags=["benchmark"]) as dag:

    @task
    def list_images() -> list[str]:
        folder = os.environ["BENCH_BATCH_DIR"]
        return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".png"))

    DeferredWait.partial(
        task_id="fill",
        seconds=float(os.environ.get("BENCH_EXPECTED_SECONDS", "2")),
        pool="eachlabs",
        retries=2,
        # Airflow 3.3 sometimes answers a finished try's success report with a 404 (apache/airflow#72716)
        # and retries it; the retry re-attaches. A short delay keeps that from stretching the DAG run.
        retry_delay=datetime.timedelta(seconds=10),
    ).expand(item=list_images())
