"""BatchTrigger: a whole batch run in the triggerer, so that while its predictions run it holds no
worker slot.

The trigger owns the pacing, the creates and the polls (see ``batch.runner``), and it stores each
output as soon as its prediction succeeds, because output URLs expire long before a batch of
thousands ends. So the triggerer needs what a worker running the batch needs: the API, and the
storage behind ``output_path``. Everything the trigger does is in the batch's journal on that
storage, so a trigger rebuilt after a triggerer restart carries on where the last one stopped,
re-attaching to every prediction already created and skipping every item already stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from airflow_provider_eachlabs.batch.runner import BatchRunner


class BatchTrigger(BaseTrigger):
    """Run the batch described by ``config`` (a ``BatchConfig`` as a dict) and yield one event:
    ``{"status": "done", "summary": ...}``, or ``{"status": "error", "message": ..., "final": ...}``."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self._runner: BatchRunner | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"config": self.config}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_eachlabs.batch.runner import BatchConfig, BatchRunner, batch_hook
        from airflow_provider_eachlabs.exceptions import is_final
        from airflow_provider_eachlabs.metrics import task_tags
        from airflow_provider_eachlabs.transport import aio

        config = BatchConfig(**self.config)
        try:
            hook = batch_hook(config.eachlabs_conn_id, self.log)
            hook.metric_tags = task_tags(self.task_instance)
            await hook.aget_settings()  # read here, on the loop: the creates in threads then reuse it
            await hook.amask_secrets()  # this triggerer may never have read the connection before
            self._runner = BatchRunner(config, hook, self.log)
            async with aio.shared_session():
                summary = await self._runner.run()
            payload: dict[str, Any] = {"status": "done", "summary": summary}
        except Exception as error:  # whatever failed, the task gets one event it can read
            payload = {
                "status": "error",
                "message": str(error) or type(error).__name__,
                "final": is_final(error),
            }
        yield TriggerEvent(payload)

    async def on_kill(self) -> None:
        """A user's action on the deferred task (mark failed, clear) cancels every prediction in
        flight. Airflow 3.3+ calls this only for user actions, never on a triggerer restart."""
        runner = self._runner
        if runner is None:
            return
        await asyncio.gather(
            *(
                asyncio.to_thread(runner.cancel_quietly, prediction_id)
                for prediction_id in runner.in_flight_ids()
            )
        )
