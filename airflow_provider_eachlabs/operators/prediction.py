"""EachlabsPredictionOperator: run any Eachlabs model as a task — submit, record, wait, finish.

Module level imports only ``airflow.sdk`` and this package's cheap modules: DAG files import this
at every parse. The hook, HTTP libraries and the trigger load inside ``execute``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_eachlabs.failing import final_errors_fail_the_task
from airflow_provider_eachlabs.links import EachlabsPredictionLink
from airflow_provider_eachlabs.operators.review import ReviewMixin
from airflow_provider_eachlabs.results import PREDICTION_ID_KEY, PREDICTION_URL_KEY, outcome_reported
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
    from airflow_provider_eachlabs.record import TaskRecord
    from airflow_provider_eachlabs.reruns import Earlier

# Kept importable for DAGs and tests written against earlier releases.
DEFAULT_TIMEOUT = PREDICTION_TIMEOUT


class EachlabsPredictionOperator(ReviewMixin, BaseOperator):
    """Run one Eachlabs prediction of any model and return a small result.

    :param model: the model slug, e.g. ``flux-fill-pro``. Templated.
    :param input: the model's input object. Templated. Checked before the create against the JSON
        Schema the API publishes for the model (``GET /v1/model``), so bad input costs nothing.
    :param eachlabs_conn_id: the ``eachlabs`` connection holding the API key. Templated.
    :param deferrable: wait in the triggerer, freeing the worker slot. Defaults to
        ``[operators] default_deferrable``.
    :param wait_for_completion: False submits and returns the prediction id for a downstream sensor.
    :param poll_interval: seconds between status checks; None (default) looks first near the model's
        expected run time, then every second, then less often for long runs.
    :param timeout: how long the prediction may run (seconds or timedelta); past it the prediction is
        cancelled and the task fails with ``PredictionTimeout``.
    :param webhook_url: an https:// URL passed to the API for its webhook. Templated.
    :param webhook_secret: passed to the API to sign webhook calls. Templated, so it can come from a
        connection or a Variable (``{{ conn.my_hook.password }}``); masked in logs and rendered fields.
    :param output_path: where to store the output files (local path or object-storage URI; a
        folder-like path gets ``<prediction id>.<ext>``, the extension of the image type its bytes
        show, and ``<prediction id>_1.<ext>``... for further files). Checked before anything is
        bought. Templated. None keeps only the URLs.
    :param output_name: the stem of the stored files instead of the prediction id, e.g. the source
        image's name in a batch. Templated.
    :param max_output_bytes: the largest output download accepted.
    :param retry_unknown_failures: whether a prediction that failed for a reason the API does not
        classify gets a fresh prediction on a task retry (True, the default) or fails the task at once.
        Content-policy and input rejections always fail at once; known transient ones are retried.
    :param fresh_prediction: buy a new prediction even when an earlier try of this task instance
        bought one for the same input (a new variant), once per run or clear: the retries of the try
        that bought it re-use it. Without it, a retry or a clear re-uses a running or succeeded
        prediction of an unchanged input, refuses an input already rejected, and buys a changed
        input anew (see README, "Re-running a fill"). Templated (``"{{ params.fresh }}"``).
    :param max_cost: the most this task instance may spend, in USD, over every prediction of every try
        (README, "Budget"): a create that would take it past this is not sent, and the task fails,
        final, saying what was spent and on what. None (default): no limit. Templated.
    :param cost_per_prediction: the price of one prediction in USD, which ``max_cost`` needs: the API
        publishes no price per model. Ended predictions count at the cost the API reports. Templated.
    :param review: wait for a person before the output is stored (README, "Reviewing fills before
        they are published"): the task asks through Airflow's human-in-the-loop (Required Actions, the
        Eachlabs tab, the HITL REST API) and waits without a worker slot. Approve stores it; Reject
        fails the task with the note; Re-fill buys a new prediction with the reviewer's prompt, seed or
        guidance.
    :param max_review_rounds: the most predictions one review buys, re-fills included (default 3).
    :param review_timeout: how long a review may wait for an answer; None waits for ever.
    :param on_review_timeout: what an unanswered review does at ``review_timeout``: ``"reject"``
        (the default: the task fails) or ``"approve"``.
    """

    template_fields: Sequence[str] = (
        "model",
        "input",
        "webhook_url",
        "webhook_secret",
        "output_path",
        "output_name",
        "eachlabs_conn_id",
        "fresh_prediction",
        "max_cost",
        "cost_per_prediction",
    )
    template_fields_renderers = {"input": "json"}
    # This operator writes its own spend ledger entries (``ledger``); its hook must not add its own.
    records_its_purchases = True
    operator_extra_links = (EachlabsPredictionLink(),)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        model: str,
        input: Mapping[str, Any] | None = None,
        eachlabs_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        wait_for_completion: bool = True,
        poll_interval: float | None = None,
        timeout: float | timedelta = PREDICTION_TIMEOUT,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        output_path: str | None = None,
        output_name: str | None = None,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        retry_unknown_failures: bool = True,
        fresh_prediction: bool | str = False,
        max_cost: float | str | None = None,
        cost_per_prediction: float | str | None = None,
        review: bool = False,
        max_review_rounds: int = 3,
        review_timeout: timedelta | None = None,
        on_review_timeout: str = "reject",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_provider_eachlabs.review import check_settings

        check_settings(max_review_rounds, on_review_timeout)
        if output_path and not wait_for_completion:
            from airflow_provider_eachlabs.exceptions import EachlabsInputError

            raise EachlabsInputError(
                "output_path",
                output_path,
                "is never written with wait_for_completion=False (the task ends before the output "
                "exists): give output_path to the PredictionSensor that waits for the prediction",
            )
        self.model = model
        self.input = dict(input or {})
        self.eachlabs_conn_id = eachlabs_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.output_path = output_path
        self.output_name = output_name
        self.max_output_bytes = max_output_bytes
        self.retry_unknown_failures = retry_unknown_failures
        self.fresh_prediction = fresh_prediction
        from airflow_provider_eachlabs.budget import check_given

        check_given(max_cost=max_cost, cost_per_prediction=cost_per_prediction)
        self.max_cost = max_cost
        self.cost_per_prediction = cost_per_prediction
        self.review = review
        self.max_review_rounds = max_review_rounds
        self.review_timeout = review_timeout
        self.on_review_timeout = on_review_timeout
        self.prediction_id: str | None = None
        # Files fetched during this try, by URL: the output is stored and previewed from one download.
        self._fetched: dict[str, bytes] = {}

    @cached_property
    def hook(self) -> EachlabsHook:
        from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

        return EachlabsHook(self.eachlabs_conn_id)

    # --- steps subclasses refine --------------------------------------------------------------------

    def build_input(self, context: Context, record: TaskRecord) -> dict[str, Any]:
        """The ``input`` object to send, checked against the model's published schema.

        FluxFillOperator replaces this: it checks the model page's exact rules and uploads files.
        """
        from airflow_provider_eachlabs.inputs import MAX_PROMPT_CHARS, require_text
        from airflow_provider_eachlabs.schema import check_against_schema, published_schema

        for field in ("prompt", "image", "mask"):
            if isinstance(self.input.get(field), str):
                cap = MAX_PROMPT_CHARS if field == "prompt" else None
                require_text(f"input.{field}", self.input[field], cap)
        schema = published_schema(self.hook.host, self.model, self.hook.get_model, self.log)
        if schema is not None:
            check_against_schema(self.input, schema)
        return dict(self.input)

    def expected_output_format(self) -> str | None:
        return None

    def review_fields(self) -> dict[str, Any]:
        """The input's fields a reviewer may change (``review``): those the model's input has."""
        from airflow_provider_eachlabs.review import CHANGEABLE

        return {name: self.input[name] for name in CHANGEABLE if name in self.input}

    def apply_review_changes(self, changes: dict[str, Any]) -> None:
        self.input = {**self.input, **changes}

    def output_locations(self) -> dict[str, str]:
        """Where this task writes files, by parameter name: each is checked before anything is bought."""
        return {"output_path": str(self.output_path)} if self.output_path else {}

    def finish(self, context: Context, prediction: Prediction) -> dict[str, Any]:
        """Report the success once, store the outputs when asked and return the small XCom result;
        with ``review``, wait for a person's answer first (``ReviewMixin``)."""
        from airflow_provider_eachlabs.outputs import finished_result

        if self.wants_review():
            self.ask_for_review(context, prediction)

        return finished_result(
            context,
            prediction,
            model=self.model,
            output_path=self.output_path,
            name=self.file_stem(prediction),
            fetch=self.fetch,
            expected_format=self.expected_output_format(),
            log=self.log,
        )

    def file_stem(self, prediction: Prediction) -> str:
        """The name stored files get: ``output_name`` when given, else the prediction id."""
        return str(self.output_name) if self.output_name else prediction.id

    def fetch(self, url: str) -> bytes:
        """Download a file once per try, within ``max_output_bytes``."""
        if url not in self._fetched:
            self._fetched[url] = self.hook.download(url, self.max_output_bytes).content
        return self._fetched[url]

    # --- the task -----------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        with final_errors_fail_the_task(), outcome_reported(context, lambda: self.prediction_id, self.model):
            return self._execute(context)

    def _execute(self, context: Context) -> Any:
        from airflow_provider_eachlabs.metrics import task_tags
        from airflow_provider_eachlabs.outputs import check_output_locations
        from airflow_provider_eachlabs.record import TaskRecord

        self.hook.metric_tags = task_tags(context["ti"])
        self._check_webhook()
        check_output_locations(self.output_locations(), self.output_name)
        record = TaskRecord.load(context)
        self.apply_review_changes(dict(record.review.get("changes") or {}))
        if not record.stored:
            self.log.warning(
                "task_state_store is not available (Airflow older than 3.3): a retry or a clear of this "
                "task cannot know what this try buys, and will buy a new prediction whatever its input"
            )
        prediction_id, started_at, done = self._submit_or_reattach(context, record)
        if not self.wait_for_completion:
            from airflow_provider_eachlabs.assets import announce_prediction

            submitted = {"prediction_id": prediction_id, "model": self.model, "status": "submitted"}
            announce_prediction(context, submitted, log=self.log)
            return prediction_id
        if done is not None:
            return self.finish(context, done)
        if self.deferrable:
            self._defer(prediction_id, started_at, self._deadline(context, started_at))
        return self._wait_here(context, prediction_id, started_at)

    def _check_webhook(self) -> None:
        """The webhook URL must be https; the secret is masked before anything can log it."""
        self._guard_webhook_secret()
        if self.webhook_url:
            from airflow_provider_eachlabs.addresses import PUBLIC_URL_RULE, is_public_https_url
            from airflow_provider_eachlabs.exceptions import EachlabsInputError

            if not is_public_https_url(str(self.webhook_url)):
                raise EachlabsInputError("webhook_url", self.webhook_url, PUBLIC_URL_RULE)

    def _guard_webhook_secret(self) -> None:
        """A literal webhook secret is masked in this process's logs and redacted from every answer
        of the API, which was sent it and may repeat it; Airflow masks it by itself only when it came
        from a connection or a Variable with a secret-sounding name."""
        if self.webhook_secret:
            from airflow.sdk.log import mask_secret

            mask_secret(str(self.webhook_secret))
            self.hook.redact_also(str(self.webhook_secret))

    def _budget_terms(self, record: TaskRecord) -> tuple[float, float] | None:
        """``max_cost`` and the price it counts with, checked before anything is done; None without a
        budget. Without a price the task fails at once: the API publishes none (``budget``)."""
        from airflow_provider_eachlabs.budget import budget_terms

        terms = budget_terms(self.max_cost, self.cost_per_prediction)
        if terms is not None and not record.stored:
            self.log.warning(
                "max_cost covers this try only: without task_state_store (Airflow older than 3.3) a try "
                "cannot know what earlier tries of this task spent"
            )
        return terms

    def _check_budget(self, record: TaskRecord, terms: tuple[float, float] | None) -> None:
        """Send the create only when it fits in what is left of ``max_cost``, counting every try's
        predictions (``TaskRecord.spent_so_far``); else fail, final, saying what was spent on what."""
        if terms is None:
            return
        from airflow_provider_eachlabs.budget import Budget, to_micro, usd
        from airflow_provider_eachlabs.exceptions import EachlabsBudgetError

        price = to_micro(terms[1])
        spent, ids = record.spent_so_far(price)
        budget = Budget(to_micro(terms[0]), price, spent)
        if not budget.can_buy(1):
            raise EachlabsBudgetError(f"{budget.refusal(ids)}: it was not sent (raise max_cost to buy it)")
        self.log.info(
            "Budget: %s of max_cost %s spent on %d predictions; this one costs %s",
            usd(spent),
            usd(budget.max_cost),
            len(ids),
            usd(price),
        )

    def _submit_or_reattach(
        self, context: Context, record: TaskRecord
    ) -> tuple[str, float, Prediction | None]:
        """Re-use what an earlier try bought for this same input, or buy, recording it at once.

        The input is built (checked, files uploaded) first: what is bought is keyed by it
        (``reruns``). The record reads as three states (see ``record``): created (the rule decides:
        re-use, refuse, or buy anew), sent without an id (an earlier try died between sending and
        recording: look for what it made from this input before paying again), nothing sent. The
        record is saved before the create is sent.
        """
        from airflow_provider_eachlabs import ledger, metrics
        from airflow_provider_eachlabs.record import RecordState
        from airflow_provider_eachlabs.reruns import Choice, decide, fresh_requested, input_digests, input_key
        from airflow_provider_eachlabs.results import INPUT_XCOM_MAX_BYTES, small_json

        budget = self._budget_terms(record)
        input_ = self.build_input(context, record)
        files = {url: digest for digest, url in record.uploads.items()}
        digests = input_digests(input_, files)
        key = input_key(digests)
        fresh = fresh_requested(self.fresh_prediction)
        ti = context["ti"]
        if record.state is RecordState.CREATED:
            assert record.prediction_id is not None
            now = self._earlier(context, record, files)
            decision = decide(now[0], key, digests, fresh=fresh)
            self.log.info(decision.reason[:1].upper() + decision.reason[1:])
            if decision.choice is Choice.REUSE:
                self._announce(context, record, record.prediction_id, "re-used", decision.reason)
                metrics.reused(metrics.task_tags(ti))
                done = now[1] if now[1] is not None and now[1].succeeded else None
                return record.prediction_id, record.started_at or time.time(), done
            if decision.choice is Choice.REFUSE:
                self._refuse(context, record, decision.reason, now[1])
            record.finished()
            how, why = "bought", decision.reason
        else:
            how, why = "bought", "no earlier try bought a prediction of this task"
        if record.state is RecordState.SENT_WITHOUT_ID:
            assert record.sent_at is not None
            found = self.hook.find_prediction(
                self.model, input_, since=record.sent_at, exclude=record.finished_ids
            )
            if found is not None:
                self.log.info(
                    "Found prediction %s, created by an earlier try that died before recording it", found
                )
                record.created(found, time.time())
                record.save(context)
                ledger.record_bought(
                    context, found, self.model, ledger.HOW_FOUND, conn_id=self.eachlabs_conn_id
                )
                reattached = self._reattach(found, record.started_at or time.time())
                if reattached is not None:
                    self._announce(context, record, found, "found", "an earlier try bought it and died")
                    return reattached
                record.finished()
        bought = {
            "key": key,
            "digests": digests,
            "try": getattr(ti, "try_number", None),
            "max_tries": getattr(ti, "max_tries", None),
            "fresh": fresh,
        }
        self._check_budget(record, budget)
        record.sending(time.time(), small_json(input_, INPUT_XCOM_MAX_BYTES), bought)
        record.save(context)
        prediction_id = self.hook.submit_prediction(
            self.model,
            input_,
            webhook_url=self.webhook_url,
            webhook_secret=self.webhook_secret,
            since=record.sent_at,
            exclude=record.finished_ids,
        )
        metrics.bought(metrics.task_tags(ti))
        record.created(prediction_id, time.time())
        ledger.record_bought(
            context, prediction_id, self.model, ledger.HOW_BOUGHT, record.started_at, self.eachlabs_conn_id
        )
        self._announce(context, record, prediction_id, how, why)
        return prediction_id, record.started_at or time.time(), None

    def _earlier(
        self, context: Context, record: TaskRecord, files: Mapping[str, str]
    ) -> tuple[Earlier, Prediction | None]:
        """What the record's prediction was bought for, and the API's word on it now."""
        from airflow_provider_eachlabs.exceptions import EachlabsNotFoundError
        from airflow_provider_eachlabs.reruns import (
            Earlier,
            fresh_this_run,
            input_digests,
            input_key,
            rejection,
        )

        assert record.prediction_id is not None
        try:
            prediction: Prediction | None = self.hook.get_prediction(record.prediction_id)
        except EachlabsNotFoundError:
            prediction = None
        bought = record.bought
        digests = bought.get("digests")
        if not (isinstance(digests, Mapping) and all(isinstance(v, str) for v in digests.values())):
            # An older release's record: the input as sent, when it kept it, stands for it.
            digests = input_digests(record.sent_input, files) if record.sent_input is not None else None
        failed = prediction is not None and prediction.failed
        rejected = rejection(prediction.error_code, prediction.error_text) if failed and prediction else None
        max_tries = getattr(context["ti"], "max_tries", None)
        earlier = Earlier(
            prediction_id=record.prediction_id,
            try_number=bought.get("try") if isinstance(bought.get("try"), int) else self._bought_by(record),
            key=input_key(digests) if digests is not None else None,
            digests=dict(digests) if digests is not None else None,
            status=prediction.status if prediction is not None else "unknown",
            rejected=rejected,
            bought_fresh_this_run=fresh_this_run(bought.get("fresh"), bought.get("max_tries"), max_tries),
        )
        return earlier, prediction

    @staticmethod
    def _bought_by(record: TaskRecord) -> int | None:
        """The try that bought the record's prediction, from the history older releases kept."""
        return next(
            (
                a["try"]
                for a in record.attempts
                if a.get("prediction_id") == record.prediction_id and isinstance(a.get("try"), int)
            ),
            None,
        )

    def _refuse(
        self, context: Context, record: TaskRecord, reason: str, prediction: Prediction | None
    ) -> None:
        """Fail the task at once for an input already rejected: nothing is bought."""
        from airflow_provider_eachlabs.exceptions import PredictionFailed

        assert record.prediction_id is not None
        self._announce(context, record, record.prediction_id, "refused", reason)
        raise PredictionFailed(
            reason[:1].upper() + reason[1:],
            prediction_id=record.prediction_id,
            error_code=prediction.error_code if prediction is not None else None,
            final=True,
            request_id=prediction.request_id if prediction is not None else None,
        )

    def _reattach(self, prediction_id: str, started_at: float) -> tuple[str, float, Prediction | None] | None:
        """The orphan an earlier try made to carry on with, or None when a new one is needed.

        ``_announce`` keeps the id for ``on_kill`` straight after, before anything else can fail."""
        from airflow_provider_eachlabs.exceptions import EachlabsNotFoundError

        try:
            prediction = self.hook.get_prediction(prediction_id)
        except EachlabsNotFoundError:
            self.log.warning("Prediction %s of an earlier try is unknown to the API", prediction_id)
            return None
        if prediction.failed or prediction.cancelled:
            self.log.warning(
                "Prediction %s of an earlier try ended %r: creating a new one",
                prediction_id,
                prediction.status,
            )
            return None
        self.log.info(
            "Re-attached to prediction %s of an earlier try (status %r): no new prediction is created",
            prediction_id,
            prediction.status,
        )
        return prediction_id, started_at, prediction if prediction.succeeded else None

    def _announce(self, context: Context, record: TaskRecord, prediction_id: str, how: str, why: str) -> None:
        """Remember the prediction before anything else can fail: in the record for retries (with which
        try got it, how and why), and in XCom for the link and the task's Eachlabs page."""
        from airflow_provider_eachlabs.api import prediction_url
        from airflow_provider_eachlabs.results import REQUEST_KEY, request_record

        self.prediction_id = prediction_id
        ti = context["ti"]
        try_number = getattr(ti, "try_number", None)
        record.attempts.append({"try": try_number, "prediction_id": prediction_id, "how": how, "why": why})
        record.save(context)
        ti.xcom_push(key=PREDICTION_ID_KEY, value=prediction_id)
        ti.xcom_push(key=PREDICTION_URL_KEY, value=prediction_url(self.hook.host, prediction_id))
        ti.xcom_push(
            key=REQUEST_KEY,
            value=request_record(
                prediction_id=prediction_id,
                model=self.model,
                conn_id=self.eachlabs_conn_id,
                input=record.sent_input,
                how=how,
                why=why,
                try_number=try_number,
            ),
        )

    def _deadline(self, context: Context, started_at: float) -> float:
        """When the wait must end: ``timeout`` after the create, and within ``execution_timeout``.

        Airflow applies ``execution_timeout`` to ``execute`` only, not to the deferred wait, so the
        trigger carries it: it ends a little before, the prediction is cancelled, and the task fails
        with ``PredictionTimeout`` rather than a bare trigger timeout.
        """
        deadline = started_at + self.timeout
        start = getattr(context.get("ti"), "start_date", None)
        if self.execution_timeout and start is not None:
            budget = self.execution_timeout.total_seconds()
            deadline = min(deadline, start.timestamp() + budget - min(5.0, budget / 10))
        return deadline

    def _defer(self, prediction_id: str, started_at: float, deadline: float) -> None:
        from airflow_provider_eachlabs.polling import expected_seconds_for
        from airflow_provider_eachlabs.triggers.prediction import PredictionTrigger

        self.defer(
            trigger=PredictionTrigger(
                prediction_id=prediction_id,
                eachlabs_conn_id=self.eachlabs_conn_id,
                deadline=deadline,
                started_at=started_at,
                poll_interval=self.poll_interval,
                expected_seconds=expected_seconds_for(self.model),
            ),
            method_name="execute_complete",
        )

    def _wait_here(self, context: Context, prediction_id: str, started_at: float) -> dict[str, Any]:
        """Wait on the worker; ``timeout`` and ``execution_timeout`` both cancel the prediction."""
        from airflow.sdk.exceptions import AirflowTaskTimeout

        from airflow_provider_eachlabs.api import raise_for_prediction_end
        from airflow_provider_eachlabs.exceptions import PredictionTimeout
        from airflow_provider_eachlabs.results import report_end, report_timeout

        try:
            prediction = self.hook.wait_for_prediction(
                prediction_id, self.poll_interval, self.timeout, model=self.model, started_at=started_at
            )
        except PredictionTimeout:
            self._cancel_quietly(prediction_id)
            report_timeout(context, prediction_id)
            raise
        except AirflowTaskTimeout as timeout:
            self._cancel_quietly(prediction_id)
            report_timeout(context, prediction_id)
            raise PredictionTimeout(prediction_id, time.time() - started_at, None) from timeout
        if not prediction.succeeded:
            report_end(context, prediction)  # a success is reported by ``finish``
        raise_for_prediction_end(prediction, retry_unknown_failures=self.retry_unknown_failures)
        return self.finish(context, prediction)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: check the event, fail with everything the API said, or finish."""
        from airflow_provider_eachlabs import metrics

        self.prediction_id = str((event or {}).get("prediction_id") or "") or None
        with final_errors_fail_the_task(), outcome_reported(context, lambda: self.prediction_id, self.model):
            # A resumed worker: nothing masked the secrets in this process yet, and the trigger, which
            # never holds the webhook secret, could not take it out of what the API said.
            self._guard_webhook_secret()
            self.hook.mask_secrets()
            self.hook.metric_tags = metrics.task_tags(context["ti"])
            return self._complete(context, self.hook.redact(event))

    def _complete(self, context: Context, event: dict[str, Any] | None) -> dict[str, Any]:
        from airflow_provider_eachlabs.exceptions import PredictionTimeout
        from airflow_provider_eachlabs.results import report_end, report_timeout
        from airflow_provider_eachlabs.triggers.prediction import ended_unsuccessfully, prediction_from_event

        unsuccessful = ended_unsuccessfully(event)
        if unsuccessful is not None:
            report_end(context, unsuccessful)  # a success is reported by ``finish``
        try:
            prediction = prediction_from_event(event, retry_unknown_failures=self.retry_unknown_failures)
        except PredictionTimeout as timeout:
            self._cancel_quietly(timeout.prediction_id)
            report_timeout(context, timeout.prediction_id)
            raise
        return self.finish(context, prediction)

    def on_kill(self) -> None:
        """A kill cancels the prediction this task is waiting for; it never raises."""
        if self.prediction_id:
            self._cancel_quietly(self.prediction_id)

    def _cancel_quietly(self, prediction_id: str) -> None:
        try:
            self.hook.cancel_prediction(prediction_id)
        except Exception as error:
            self.log.warning("Could not cancel prediction %s: %s", prediction_id, error)

    # --- OpenLineage: called by apache-airflow-providers-openlineage only, which ``lineage`` needs ---

    def openlineage_input_files(self) -> list[Any]:
        """The rendered fields that name the files the task reads: the input's ``image`` and ``mask``."""
        input_ = self.input if isinstance(self.input, Mapping) else {}
        return [input_.get(field) for field in ("image", "mask")]

    def get_openlineage_facets_on_start(self) -> Any:
        """The files the task reads, as OpenLineage input datasets (see ``lineage``)."""
        from airflow_provider_eachlabs.lineage import prediction_lineage

        return prediction_lineage(self.openlineage_input_files(), model=str(self.model))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The inputs, the files the task stored (from its XCom result) and its prediction's run facet."""
        from airflow_provider_eachlabs.lineage import prediction_lineage

        return prediction_lineage(self.openlineage_input_files(), task_instance, model=str(self.model))
