"""ReviewMixin: a fill waits for a person before it is stored (``review=True``).

One concern, mixed into ``EachlabsPredictionOperator`` (and so ``FluxFillOperator`` and
``@task.eachlabs``): the step between "the prediction succeeded" and "its output is stored". The rules
(answers, form, messages) are in ``airflow_provider_eachlabs.review``; this module talks to Airflow's
human-in-the-loop: it writes the request (Required Actions lists it; the tab and the HITL REST API
answer it), parks the task without a worker slot (Airflow 3.3's ``awaiting_input``; a
``HITLTrigger`` on 3.2) and resumes in ``review_complete``. A re-fill is bought as any prediction
is (the record, the ledger, the budget), waited for as configured (deferred or here), and reviewed
again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_eachlabs.api import Prediction
    from airflow_provider_eachlabs.record import TaskRecord


class ReviewMixin:
    """What ``review=True`` adds to a prediction operator (see the module's docstring)."""

    review: bool
    max_review_rounds: int
    review_timeout: timedelta | None
    on_review_timeout: str
    # Set once the reviewer approved: ``finish`` then stores the output.
    _review_approved: bool = False

    if TYPE_CHECKING:  # what the host operator has (EachlabsPredictionOperator)
        log: Any
        hook: Any
        model: str
        deferrable: bool

        def finish(self, context: Context, prediction: Prediction) -> dict[str, Any]: ...

        def _submit_or_reattach(
            self, context: Context, record: TaskRecord
        ) -> tuple[str, float, Prediction | None]: ...

        def _defer(self, prediction_id: str, started_at: float, deadline: float) -> None: ...

        def _deadline(self, context: Context, started_at: float) -> float: ...

        def _wait_here(self, context: Context, prediction_id: str, started_at: float) -> dict[str, Any]: ...

    # --- what the host operator provides --------------------------------------------------------

    def review_fields(self) -> dict[str, Any]:
        """The fields a reviewer may change, as the task will send them now."""
        raise NotImplementedError

    def apply_review_changes(self, changes: dict[str, Any]) -> None:
        """Make the reviewer's changes part of what the task sends from now on."""
        raise NotImplementedError

    # --- asking ---------------------------------------------------------------------------------

    def wants_review(self) -> bool:
        return bool(self.review) and not self._review_approved

    def ask_for_review(self, context: Context, prediction: Prediction) -> None:
        """Count the fill (its cost is spent whatever the answer), leave it for the tab, write the
        human-in-the-loop request and wait for the answer without holding a worker slot."""
        from airflow_provider_eachlabs import review as rules
        from airflow_provider_eachlabs.record import TaskRecord
        from airflow_provider_eachlabs.results import OUTCOME_KEY, prediction_summary, report_success

        log = self.log
        report_success(context, prediction, log)
        record = TaskRecord.load(context)
        self.apply_review_changes(dict(record.review.get("changes") or {}))
        round_number = int(record.review.get("round") or 1)
        record.review = {**record.review, "round": round_number, "prediction_id": prediction.id}
        record.save(context)
        outcome = {
            **prediction_summary(prediction),
            "ok": False,
            "status": "awaiting review",
            "review_round": round_number,
            "max_review_rounds": self.max_review_rounds,
            "model": self.model,
        }
        context["ti"].xcom_push(key=OUTCOME_KEY, value=outcome)
        ti = context["ti"]
        form = rules.params(self.review_fields())
        defaults = write_request(
            ti,
            subject=f"{rules.FILL_SUBJECT}{ti.task_id} ({ti.dag_id})",
            body=rules.body(ti.task_id, self.max_review_rounds, review_tab(ti)),
            form=form,
            review_timeout=self.review_timeout,
            on_review_timeout=self.on_review_timeout,
        )
        log.info(
            "Prediction %s waits for a review (round %d of at most %d): answer it in Required Actions "
            "or in the task's Eachlabs tab",
            prediction.id,
            round_number,
            self.max_review_rounds,
        )
        wait_for_answer(self, ti.id, defaults, form, self.review_timeout)

    # --- the answer -----------------------------------------------------------------------------

    def review_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume with the reviewer's answer: store and succeed, fail with the note, or re-fill."""
        from airflow_provider_eachlabs.failing import final_errors_fail_the_task
        from airflow_provider_eachlabs.results import outcome_reported

        record_id: list[str | None] = [None]
        with (
            final_errors_fail_the_task(),
            outcome_reported(context, lambda: record_id[0], getattr(self, "model", None)),
        ):
            return self._answered(context, event, record_id)

    def _answered(self, context: Context, event: dict[str, Any] | None, record_id: list[str | None]) -> Any:
        from airflow_provider_eachlabs import review as rules
        from airflow_provider_eachlabs.record import TaskRecord

        log = self.log
        hook = self.hook
        hook.mask_secrets()  # a resumed worker: nothing masked the key in this process yet
        record = TaskRecord.load(context)
        self.apply_review_changes(dict(record.review.get("changes") or {}))
        prediction_id = str(record.review.get("prediction_id") or record.prediction_id or "")
        record_id[0] = prediction_id or None
        round_number = int(record.review.get("round") or 1)
        answer = rules.verdict(event, self.review_fields())
        log.info(
            "Review round %d of prediction %s: %s%s%s",
            round_number,
            prediction_id,
            answer.choice,
            f" by {answer.by}" if answer.by else (" (the review's timeout)" if answer.timed_out else ""),
            f", note: {answer.note}" if answer.note else "",
        )
        if answer.choice == rules.REJECT:
            self._end_review(context, record)
            raise rules.ReviewRejected(rules.rejection(answer, prediction_id, round_number))
        if answer.choice == rules.APPROVE:
            prediction = hook.get_prediction(prediction_id)
            self._review_approved = True
            result = self.finish(context, prediction)
            self._end_review(context, record)
            return result
        if round_number >= self.max_review_rounds:
            self._end_review(context, record)
            raise rules.ReviewRoundsExhausted(rules.exhausted(self.max_review_rounds, prediction_id))
        return self._refill(context, record, answer.changes, round_number + 1)

    def _refill(
        self, context: Context, record: TaskRecord, changes: dict[str, Any], round_number: int
    ) -> Any:
        """Buy the next fill with the reviewer's changes (a re-fill without changes is a new variant),
        then wait for it as the task waits for any: its ``finish`` asks for the next review."""
        changes = {**dict(record.review.get("changes") or {}), **changes}
        self.apply_review_changes(changes)
        record.review = {"round": round_number, "changes": changes}
        record.finished()  # the reviewed prediction is done with: the re-fill is bought, never re-used
        record.save(context)
        self.log.info(
            "Re-fill for review round %d with %s", round_number, changes or "no change: a new variant"
        )
        prediction_id, started_at, done = self._submit_or_reattach(context, record)
        if done is not None:
            return self.finish(context, done)
        if self.deferrable:
            self._defer(prediction_id, started_at, self._deadline(context, started_at))
        return self._wait_here(context, prediction_id, started_at)

    @staticmethod
    def _end_review(context: Context, record: TaskRecord) -> None:
        record.review = {}
        record.save(context)


def write_request(
    ti: Any,
    *,
    subject: str,
    body: str,
    form: dict[str, Any],
    review_timeout: timedelta | None,
    on_review_timeout: str,
) -> list[str] | None:
    """Write the task's human-in-the-loop request (Required Actions lists it, the HITL REST API
    answers it); return the answer a timeout takes, if the review has one."""
    from airflow.sdk.execution_time.hitl import upsert_hitl_detail

    from airflow_provider_eachlabs.review import OPTIONS, TIMEOUT_CHOICES

    defaults = [TIMEOUT_CHOICES[on_review_timeout]] if review_timeout else None
    upsert_hitl_detail(
        ti_id=ti.id,
        options=OPTIONS,
        subject=subject,
        body=body,
        defaults=defaults,
        multiple=False,
        params=form,
    )
    return defaults


def review_tab(ti: Any) -> str:
    from airflow.sdk import conf

    from airflow_provider_eachlabs.links import task_tab_path

    base = conf.get("api", "base_url", fallback="/") or "/"
    return task_tab_path(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, base)


def wait_for_answer(
    operator: Any,
    ti_id: Any,
    defaults: list[str] | None,
    form: dict[str, Any],
    timeout: timedelta | None,
    method_name: str = "review_complete",
) -> None:
    """Park the task until the answer: ``awaiting_input`` on Airflow 3.3 (no trigger, no slot),
    a deferral to the standard provider's ``HITLTrigger`` before."""
    from airflow_provider_eachlabs.review import OPTIONS

    try:
        from airflow.sdk.exceptions import TaskAwaitingInput
    except ImportError:  # Airflow 3.2
        from airflow.providers.standard.triggers.hitl import HITLTrigger
        from airflow.sdk.timezone import utcnow

        operator.defer(
            trigger=HITLTrigger(
                ti_id=ti_id,
                options=OPTIONS,
                defaults=defaults,
                params=form,
                multiple=False,
                timeout_datetime=utcnow() + timeout if timeout else None,
            ),
            method_name=method_name,
        )
    raise TaskAwaitingInput(method_name=method_name, timeout=timeout)
