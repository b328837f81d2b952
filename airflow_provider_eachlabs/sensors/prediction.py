"""PredictionSensor: wait for a prediction submitted elsewhere (``wait_for_completion=False``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_eachlabs.failing import final_errors_fail_the_task
from airflow_provider_eachlabs.links import EachlabsPredictionLink
from airflow_provider_eachlabs.results import (
    PREDICTION_ID_KEY,
    PREDICTION_URL_KEY,
    REQUEST_KEY,
    outcome_reported,
    request_record,
)
from airflow_provider_eachlabs.settings import (
    DEFAULT_CONN_ID,
    MAX_OUTPUT_BYTES,
    PREDICTION_TIMEOUT,
    default_deferrable,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_eachlabs.api import Prediction
    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

DEFAULT_SENSOR_TIMEOUT = PREDICTION_TIMEOUT


class PredictionSensor(BaseSensorOperator):
    """Succeed when the prediction succeeds; fail without retries when it fails or is cancelled.

    :param prediction_id: the prediction to watch. Templated, e.g.
        ``"{{ ti.xcom_pull(task_ids='submit') }}"``.
    :param eachlabs_conn_id: the ``eachlabs`` connection. Templated.
    :param deferrable: wait in the triggerer. Defaults to ``[operators] default_deferrable``.
    :param poke_interval: seconds between checks (poke mode, and the trigger's interval).
    :param output_path: where to store the output files, exactly as the operators' ``output_path``
        (checked before the wait, downloaded as soon as the prediction succeeds). Templated.
    :param output_name: the stem of the stored files instead of the prediction id. Templated.
    :param max_output_bytes: the largest output download accepted.

    Returns the same small dict as the operators: prediction id, status, output URLs, metrics, and
    the stored files when ``output_path`` is given.
    """

    template_fields: Sequence[str] = ("prediction_id", "output_path", "output_name", "eachlabs_conn_id")
    operator_extra_links = (EachlabsPredictionLink(),)

    def __init__(
        self,
        *,
        prediction_id: str,
        eachlabs_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        poke_interval: float | timedelta = 5,
        timeout: float | timedelta = DEFAULT_SENSOR_TIMEOUT,
        output_path: str | None = None,
        output_name: str | None = None,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.prediction_id = prediction_id
        self.eachlabs_conn_id = eachlabs_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.output_path = output_path
        self.output_name = output_name
        self.max_output_bytes = max_output_bytes
        self._id_checked = False

    @cached_property
    def hook(self) -> EachlabsHook:
        from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

        return EachlabsHook(self.eachlabs_conn_id)

    def execute(self, context: Context) -> Any:
        with final_errors_fail_the_task(), outcome_reported(context, self._checked_id, None):
            return self._execute(context)

    def _checked_id(self) -> str | None:
        """The prediction id once it passed its checks: a refused id has no outcome to report."""
        return self.prediction_id if self._id_checked else None

    def _execute(self, context: Context) -> Any:
        from airflow_provider_eachlabs.api import check_prediction_id, prediction_url
        from airflow_provider_eachlabs.inputs import require_text
        from airflow_provider_eachlabs.metrics import task_tags
        from airflow_provider_eachlabs.outputs import check_output_locations

        self.hook.metric_tags = task_tags(context["ti"])
        require_text("prediction_id", self.prediction_id)
        self.prediction_id = check_prediction_id(self.prediction_id, field_name="prediction_id")
        self._id_checked = True
        check_output_locations(
            {"output_path": self.output_path} if self.output_path else {}, self.output_name
        )
        ti = context["ti"]
        ti.xcom_push(key=PREDICTION_ID_KEY, value=self.prediction_id)
        ti.xcom_push(key=PREDICTION_URL_KEY, value=prediction_url(self.hook.host, self.prediction_id))
        ti.xcom_push(
            key=REQUEST_KEY,
            value=request_record(
                prediction_id=self.prediction_id,
                model=None,
                conn_id=self.eachlabs_conn_id,
                input=None,
                how="sensed",
                why="a prediction submitted elsewhere, watched: nothing is bought here",
                try_number=getattr(ti, "try_number", None),
            ),
        )
        if not self.deferrable:
            return super().execute(context)  # poke() until done; its errors come back through here
        from airflow_provider_eachlabs.triggers.prediction import PredictionTrigger

        now = time.time()
        self.defer(
            trigger=PredictionTrigger(
                prediction_id=self.prediction_id,
                eachlabs_conn_id=self.eachlabs_conn_id,
                deadline=now + float(self.timeout),
                started_at=now,
                poll_interval=float(self.poke_interval),
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Context) -> PokeReturnValue:
        prediction = self.hook.get_prediction(self.prediction_id)
        self.log.info("Prediction %s is %r", self.prediction_id, prediction.status)
        if not prediction.is_terminal:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._finish(context, prediction))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        from airflow_provider_eachlabs.results import report_end
        from airflow_provider_eachlabs.triggers.prediction import ended_unsuccessfully, prediction_from_event

        self._id_checked = True  # checked before the deferral
        with final_errors_fail_the_task(), outcome_reported(context, self._checked_id, None):
            self.hook.mask_secrets()  # a resumed worker: nothing masked the key in this process yet
            event = self.hook.redact(event)
            unsuccessful = ended_unsuccessfully(event)
            if unsuccessful is not None and unsuccessful.id == self.prediction_id:
                report_end(context, unsuccessful)  # a success is reported by ``_finish``
            return self._finish(context, prediction_from_event(event, self.prediction_id))

    def _finish(self, context: Context, prediction: Prediction) -> dict[str, Any]:
        """The result dict, or the error a failed or cancelled prediction stands for.

        A sensor cannot start a new prediction, so a failure is final here whatever its cause.
        """
        from airflow_provider_eachlabs.api import raise_for_prediction_end
        from airflow_provider_eachlabs.outputs import finished_result
        from airflow_provider_eachlabs.results import report_end

        if not prediction.succeeded:
            report_end(context, prediction)  # once per prediction, as a success is
        raise_for_prediction_end(prediction, retry_unknown_failures=False)
        return finished_result(
            context,
            prediction,
            model=None,
            output_path=self.output_path,
            name=str(self.output_name) if self.output_name else prediction.id,
            fetch=lambda url: self.hook.download(url, self.max_output_bytes).content,
            expected_format=None,
            log=self.log,
        )

    # --- OpenLineage: called by apache-airflow-providers-openlineage only, which ``lineage`` needs ---

    def get_openlineage_facets_on_start(self) -> Any:
        """Nothing yet: the prediction's input was sent by another task."""
        from airflow_provider_eachlabs.lineage import prediction_lineage

        return prediction_lineage([])

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The files the sensor stored (from its XCom result) and the prediction's run facet."""
        from airflow_provider_eachlabs.lineage import prediction_lineage

        return prediction_lineage([], task_instance)
