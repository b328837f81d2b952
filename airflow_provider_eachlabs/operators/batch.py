"""EachlabsBatchOperator and FluxFillBatchOperator: thousands of predictions in one task, paced at the
API's own limits, resumable without paying twice.

One task per fill (dynamic task mapping) pays Airflow's cost per task on every fill and stops at
``[core] max_map_length``; these operators run the whole set in one task instead (see ``batch``).
Module level imports only ``airflow.sdk`` and cheap modules of this package: DAG files import it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_eachlabs.failing import final_errors_fail_the_task
from airflow_provider_eachlabs.links import EachlabsPredictionLink
from airflow_provider_eachlabs.operators.batch_review import BatchReviewMixin
from airflow_provider_eachlabs.settings import DEFAULT_CONN_ID, MAX_OUTPUT_BYTES, default_deferrable

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_eachlabs.batch.items import BatchItem
    from airflow_provider_eachlabs.batch.journal import Journal
    from airflow_provider_eachlabs.batch.runner import BatchConfig, BatchRunner
    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
    from airflow_provider_eachlabs.storage import ImageFile

ON_INVALID = ("fail", "skip")
RESULTS_NAME = "eachlabs-results.jsonl"
SHOWN_ERRORS = 5


class EachlabsBatchOperator(BatchReviewMixin, BaseOperator):
    """Run one Eachlabs model over many inputs in one task, and store every output.

    :param model: the model slug. Templated.
    :param items: a list of input objects, one per item (templated, so it may come from an upstream
        task's XCom). An item's ``key`` (default: its position) names its output file.
    :param items_path: instead of ``items``, a JSONL or CSV manifest (local path or object-storage
        URI), read as a stream. Templated.
    :param defaults: fields every item starts from; an item's own fields win. Templated.
    :param output_path: the folder where each output is stored as ``<key>.<ext>``, and where the
        journal that makes retries resume lives. Templated.
    :param results_path: the results manifest (JSONL: key, prediction id, status, output URL, stored
        path, sha256, cost, predict time, error), written as the batch goes. Default
        ``<output_path>/eachlabs-results.jsonl``. Templated.
    :param on_invalid: ``"fail"`` (default) refuses the whole batch, before anything is bought, when
        any item is invalid; ``"skip"`` leaves invalid items out and records them in the results.
    :param max_failed: how many items may fail before the task fails (default 0).
    :param max_in_flight: predictions running at once (default 10, the API's cap per key).
    :param creates_per_minute: creates in any minute (default 100, the API's cap per key).
    :param item_retries: how often a transient failure of one item is tried again within the batch.
    :param deferrable: run the batch in the triggerer, freeing the worker slot. Defaults to
        ``[operators] default_deferrable``. The triggerer then needs the storage too.
    :param poll_interval: fixed seconds between status checks; None learns from the batch.
    :param timeout: how long the whole batch may take (seconds or timedelta); past it the predictions
        in flight are cancelled. Default: no limit but ``execution_timeout``.
    :param eachlabs_conn_id: the ``eachlabs`` connection. Templated.
    :param max_output_bytes: the largest output download accepted.
    :param retry_unknown_failures: whether an item whose prediction failed for a reason the API does
        not classify is tried again (content-policy and input rejections never are).
    :param fresh_prediction: buy every item anew even when an earlier try of this task instance bought
        one for the same input, once per run or clear: the retries of the try that bought them re-use
        them. Without it, a retry or a clear re-uses every running or stored prediction of an
        unchanged item (storing its output again if the file is gone), refuses an unchanged item
        already rejected, and buys only the changed items (see README, "Re-running a fill").
        Templated; a rendered ``"True"``, ``"true"`` or ``"1"`` is True.
    :param max_cost: the most this task instance's batch may spend, in USD, over every try (README,
        "Budget"): the batch logs its estimate before buying and refuses to start when it exceeds
        this, and it never sends a create that would take what it spent (in flight at the price) past
        it: it stops creating, finishes what is in flight and fails, final. None (default): no limit.
        Templated.
    :param cost_per_prediction: the price of one prediction in USD, which ``max_cost`` needs: the API
        publishes no price per model. Ended predictions count at the cost the API reports. Templated.
    :param review: stage every output in ``<output_path>/.eachlabs-review/`` and wait for a person
        before anything reaches ``output_path`` (README, "Reviewing fills before they are published"):
        Approve stores them (the items named in ``reject`` left out), Reject fails the task with the
        note, Re-fill buys the items named in ``refill`` again with their new prompts and asks again.
    :param max_review_rounds: the most review rounds, the first included (default 3).
    :param review_timeout: how long a review may wait for an answer; None waits for ever.
    :param on_review_timeout: what an unanswered review does at ``review_timeout``: ``"reject"``
        (default) or ``"approve"``.
    """

    template_fields: Sequence[str] = (
        "model",
        "items",
        "items_path",
        "defaults",
        "output_path",
        "eachlabs_conn_id",
        "results_path",
        "fresh_prediction",
        "max_cost",
        "cost_per_prediction",
    )
    template_fields_renderers = {"items": "json", "defaults": "json"}
    # This operator writes its own spend ledger entries (``ledger``); its hook must not add its own.
    records_its_purchases = True
    operator_extra_links = (EachlabsPredictionLink(),)
    ui_color = "#e8f0fe"
    # The field an item's input names its output's image type in, checked on download (None: unchecked).
    format_field: str | None = None

    def __init__(
        self,
        *,
        model: str,
        output_path: str,
        items: Sequence[Mapping[str, Any]] | str | None = None,
        items_path: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        results_path: str | None = None,
        on_invalid: str = "fail",
        max_failed: int = 0,
        max_in_flight: int = 10,
        creates_per_minute: int = 100,
        item_retries: int = 2,
        deferrable: bool | None = None,
        poll_interval: float | None = None,
        timeout: float | timedelta | None = None,
        eachlabs_conn_id: str = DEFAULT_CONN_ID,
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
        from airflow_provider_eachlabs.exceptions import EachlabsInputError
        from airflow_provider_eachlabs.review import check_settings

        check_settings(max_review_rounds, on_review_timeout)
        self.review = review
        self.max_review_rounds = max_review_rounds
        self.review_timeout = review_timeout
        self.on_review_timeout = on_review_timeout
        self._review_prompts: dict[str, str] = {}

        if on_invalid not in ON_INVALID:
            raise EachlabsInputError("on_invalid", on_invalid, f"must be one of {', '.join(ON_INVALID)}")
        for name, value in (("max_in_flight", max_in_flight), ("creates_per_minute", creates_per_minute)):
            if value < 1:
                raise EachlabsInputError(name, value, "must be at least 1")
        if max_failed < 0 or item_retries < 0:
            raise EachlabsInputError("max_failed or item_retries", (max_failed, item_retries), "must be >= 0")
        self.model = model
        self.items = items
        self.items_path = items_path
        self.defaults = dict(defaults or {})
        self.output_path = output_path
        self.results_path = results_path
        self.on_invalid = on_invalid
        self.max_failed = max_failed
        self.max_in_flight = max_in_flight
        self.creates_per_minute = creates_per_minute
        self.item_retries = item_retries
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.eachlabs_conn_id = eachlabs_conn_id
        self.max_output_bytes = max_output_bytes
        self.retry_unknown_failures = retry_unknown_failures
        self.fresh_prediction = fresh_prediction
        from airflow_provider_eachlabs.budget import check_given

        check_given(max_cost=max_cost, cost_per_prediction=cost_per_prediction)
        self.max_cost = max_cost
        self.cost_per_prediction = cost_per_prediction
        self._runner: BatchRunner | None = None
        self._schema: dict[str, Any] | None = None

    @cached_property
    def hook(self) -> EachlabsHook:
        """The connection's hook, without a log line per create, upload or stored file."""
        from airflow_provider_eachlabs.batch.runner import batch_hook

        return batch_hook(self.eachlabs_conn_id, self.log)

    # --- what subclasses refine -----------------------------------------------------------------------

    def start_checks(self) -> None:
        """Fetch what checking items needs, once: the model's published JSON Schema."""
        from airflow_provider_eachlabs.schema import published_schema

        self._schema = published_schema(self.hook.host, str(self.model), self.hook.get_model, self.log)

    def check_item(self, item: BatchItem) -> dict[str, Any]:
        """The item's input with the defaults, checked; raises ``EachlabsInputError`` naming the item."""
        from airflow_provider_eachlabs.exceptions import EachlabsInputError
        from airflow_provider_eachlabs.schema import check_against_schema

        fields = {**self.defaults, **item.fields}
        if self._schema is not None:
            try:
                check_against_schema(fields, self._schema)
            except EachlabsInputError as error:
                raise EachlabsInputError(item.field_name(error.field), error.value, error.rule) from None
        return fields

    def prepare_item(self, item: BatchItem, uploads: dict[str, str]) -> dict[str, Any]:
        """The input to send for a checked item (``FluxFillBatchOperator`` uploads its files here)."""
        return self.check_item(item)

    # --- the task -----------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        from airflow_provider_eachlabs.metrics import task_tags
        from airflow_provider_eachlabs.results import outcome_reported

        with final_errors_fail_the_task():
            self.hook.metric_tags = task_tags(context["ti"])
            # Checking and planning buy nothing: a failure here (invalid items, a wrong key, an
            # unwritable output_path) is recorded for the tab, naming no prediction.
            with outcome_reported(context, lambda: None, str(self.model)):
                config = self._plan(context)
            return self._run(context, config)

    def _run(self, context: Context, config: BatchConfig) -> Any:
        """Run the planned batch: in the triggerer when deferrable, else here, then take the verdict."""
        if self.deferrable:
            from airflow_provider_eachlabs.triggers.batch import BatchTrigger

            self.defer(trigger=BatchTrigger(config.to_dict()), method_name="execute_complete")
        return self._finish(context, config, self._run_here(config))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger ran the batch: the verdict is taken here, on the worker."""
        from airflow_provider_eachlabs.exceptions import EachlabsBatchError

        with final_errors_fail_the_task():
            self.hook.mask_secrets()  # a resumed worker: nothing masked the key in this process yet
            config = self._config(context, total_items=None)
            if not isinstance(event, Mapping) or event.get("status") not in ("done", "error"):
                raise EachlabsBatchError(f"BatchTrigger sent an event this provider cannot read: {event!r}")
            if event["status"] == "error":
                raise EachlabsBatchError(
                    f"The batch stopped in the triggerer: {event.get('message')}",
                    final=bool(event.get("final")),
                )
            return self._finish(context, config, dict(event["summary"]))

    def on_kill(self) -> None:
        """A kill of the worker running the batch cancels every prediction in flight."""
        runner = self._runner
        if runner is not None:
            for prediction_id in runner.in_flight_ids():
                runner.cancel_quietly(prediction_id)

    # --- planning: every item checked, then uploaded and written down, before the first create -------

    def _plan(self, context: Context) -> BatchConfig:
        """Check every item, then upload what needs it and write the plan the batch runs from: every
        item as it is now, with the key of the input it sends (``reruns``). The journal keeps only
        progress: the runner compares each item's key with what an earlier try bought for it, and
        never sends an earlier try's input instead of the current one. When the journal is gone (a
        try succeeded), the results manifest it left stands in for it."""
        from airflow_provider_eachlabs.batch.journal import DONE, PLAN_NAME, Journal
        from airflow_provider_eachlabs.batch.runner import would_buy
        from airflow_provider_eachlabs.budget import budget_terms
        from airflow_provider_eachlabs.outputs import check_output_locations
        from airflow_provider_eachlabs.reruns import fresh_requested, input_digests, input_key

        terms = budget_terms(self.max_cost, self.cost_per_prediction)
        check_output_locations({"output_path": self._folder}, None)
        self.load_review(context)  # a re-fill's prompts, which the items are sent with from now on
        journal = Journal(self._journal_path(context))
        self.start_checks()
        invalid, total, keys = self._check_all()
        state = journal.replay(keys, self.log)
        if not state.items:
            seeded = journal.seed(_previous_rows(self._results_file, self.log), keys)
            if seeded:
                self.log.info(
                    "This task instance's batch succeeded before (its journal was removed): the %d items "
                    "its results manifest %s lists are compared with the items as they are now",
                    seeded,
                    self._results_file,
                )
        journal.name_spend()
        valid = sum(key not in invalid for key in keys)
        to_buy, fresh = 0, fresh_requested(self.fresh_prediction)
        max_tries = _count(getattr(context["ti"], "max_tries", None))
        if terms is not None and not journal.state.items:  # nothing bought before: every valid item is
            self._check_estimate(journal, terms, valid, valid)  # checked before anything is uploaded
            terms = None
        uploads = _JournalledUploads(journal)
        planned: set[str] = set()
        with journal.folder.writing(PLAN_NAME) as plan:
            for item in self._items():
                if item.key in planned:  # a second item of the same key (skipped as invalid)
                    continue
                planned.add(item.key)
                if item.key in invalid:
                    plan.write(_json_line({"key": item.key}))
                    row = {"key": item.key, "status": "invalid", "error": invalid[item.key]}
                    known = state.items.get(item.key)
                    if known is None or known.row != row:
                        journal.record({"key": item.key, "state": DONE, "row": row})
                    continue
                input_ = self.prepare_item(item, uploads)
                digests = input_digests(input_, uploads.files)
                entry = {
                    "key": item.key,
                    "input": input_,
                    "input_key": input_key(digests),
                    "digests": digests,
                }
                plan.write(_json_line(entry))
                to_buy += terms is not None and would_buy(
                    journal.state.items.get(item.key), str(entry["input_key"]), fresh, max_tries
                )
        journal.flush()
        if terms is not None:
            self._check_estimate(journal, terms, to_buy, valid)
        self._announce(context, total)
        self.log.info(
            "Batch of %d items: %d valid, %d invalid; each valid item's input is compared with what "
            "earlier tries bought for it; at most %d in flight and %d creates a minute",
            total,
            len(planned) - len(invalid),
            len(invalid),
            self.max_in_flight,
            self.creates_per_minute,
        )
        return self._config(context, total_items=total)

    def _check_estimate(self, journal: Journal, terms: tuple[float, float], count: int, valid: int) -> None:
        """Log what the items to buy cost at the price, beside ``max_cost`` and what earlier tries of
        the batch spent; refuse the batch, final and before any create, when it exceeds ``max_cost``."""
        from airflow_provider_eachlabs.budget import Budget, to_micro
        from airflow_provider_eachlabs.exceptions import EachlabsBudgetError

        price = to_micro(terms[1])
        budget = Budget(to_micro(terms[0]), price, journal.state.spend.committed(price))
        which = (
            f"every valid item: {valid}"
            if count == valid
            else f"the items to buy: {valid - count} of the {valid} valid items re-use what earlier "
            "tries bought"
        )
        if not budget.can_buy(count):
            raise EachlabsBudgetError(
                f"The batch's estimate exceeds max_cost, so nothing was bought: {budget.estimate(count)} "
                f"({which}). Raise max_cost, or buy fewer items."
            )
        self.log.info("Budget: %s (%s)", budget.estimate(count), which)

    def _announce(self, context: Context, total: int) -> None:
        """What the UI needs to follow the batch before its first create: where its results go."""
        from airflow_provider_eachlabs.results import BATCH_KEY

        value = {
            "model": str(self.model),
            "conn_id": self.eachlabs_conn_id,
            "items": total,
            "results_path": self._results_file,
            "output_path": self._folder,
        }
        context["ti"].xcom_push(key=BATCH_KEY, value=value)

    def _check_all(self) -> tuple[dict[str, str], int, set[str]]:
        """Every item checked before anything is uploaded or bought: invalid keys and why, how many
        items there are, and their keys. With ``on_invalid="fail"`` any invalid item refuses the batch
        here."""
        from airflow_provider_eachlabs.exceptions import EachlabsBatchError, EachlabsInputError

        invalid: dict[str, str] = {}
        seen: dict[str, str] = {}
        count = 0
        for item in self._items():
            count += 1
            try:
                if item.key in seen:
                    raise EachlabsInputError(
                        item.field_name("key"),
                        item.key,
                        f"is also the key of {seen[item.key]}: keys name outputs",
                    )
                seen[item.key] = item.where
                self.check_item(item)
            except EachlabsInputError as error:
                invalid[item.key if item.key not in invalid else f"{item.key}@{item.where}"] = str(error)
        if invalid and self.on_invalid == "fail":
            shown = "; ".join(list(invalid.values())[:SHOWN_ERRORS])
            raise EachlabsBatchError(
                f"{len(invalid)} of {count} items are invalid, so nothing was sent (on_invalid='fail'; "
                f"'skip' leaves them out): {shown}",
                final=True,
            )
        for reason in list(invalid.values())[:SHOWN_ERRORS]:
            self.log.warning("Skipping an invalid item: %s", reason)
        return invalid, count, set(seen)

    def _items(self) -> Iterator[BatchItem]:
        from airflow_provider_eachlabs.batch.items import iter_items

        items = self.items
        if isinstance(items, str):  # a template that rendered a list as text
            import json

            items = json.loads(items)
        found = iter_items(items, self.items_path)
        prompts = self._review_prompts
        if not prompts:
            return found
        from dataclasses import replace

        return (
            replace(item, fields={**item.fields, "prompt": prompts[item.key]})
            if item.key in prompts
            else item
            for item in found
        )

    @property
    def _folder(self) -> str:
        return str(self.output_path).rstrip("/") + "/"

    @property
    def _results_file(self) -> str:
        return str(self.results_path or self._folder + RESULTS_NAME)

    def _journal_path(self, context: Context) -> str:
        from airflow_provider_eachlabs.batch.journal import journal_root

        ti = context["ti"]
        return journal_root(self._folder, ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))

    def _config(self, context: Context, total_items: int | None) -> BatchConfig:
        from airflow_provider_eachlabs.batch.runner import BatchConfig
        from airflow_provider_eachlabs.polling import expected_seconds_for
        from airflow_provider_eachlabs.reruns import fresh_requested

        folder = self._folder
        ti = context["ti"]
        journal_path = self._journal_path(context)
        return BatchConfig(
            model=str(self.model),
            eachlabs_conn_id=self.eachlabs_conn_id,
            output_path=folder,
            results_path=self._results_file,
            journal_path=journal_path,
            format_field=self.format_field,
            max_in_flight=self.max_in_flight,
            creates_per_minute=self.creates_per_minute,
            poll_interval=self.poll_interval,
            expected_seconds=expected_seconds_for(str(self.model)),
            deadline=self._deadline(context),
            item_retries=self.item_retries,
            retry_unknown_failures=self.retry_unknown_failures,
            max_output_bytes=self.max_output_bytes,
            total_items=total_items,
            fresh=fresh_requested(self.fresh_prediction),
            try_number=_count(getattr(ti, "try_number", None)),
            max_tries=_count(getattr(ti, "max_tries", None)),
            staging_path=self.staging_path(context),
            **self._budget_config(),
        )

    def _budget_config(self) -> dict[str, float]:
        from airflow_provider_eachlabs.budget import budget_terms

        terms = budget_terms(self.max_cost, self.cost_per_prediction)
        return {"max_cost": terms[0], "price": terms[1]} if terms is not None else {}

    def _deadline(self, context: Context) -> float | None:
        """``timeout`` from the task's start, and a little before ``execution_timeout``, which Airflow
        does not apply to a deferred task: the trigger carries it."""
        start = getattr(context.get("ti"), "start_date", None)
        began = start.timestamp() if start is not None else time.time()
        deadline = began + self.timeout if self.timeout else None
        if self.execution_timeout:
            budget = self.execution_timeout.total_seconds()
            limit = began + budget - min(5.0, budget / 10)
            deadline = limit if deadline is None else min(deadline, limit)
        return deadline

    # --- running and the verdict ----------------------------------------------------------------------

    def _run_here(self, config: BatchConfig) -> dict[str, Any]:
        """The batch on this worker, in one event loop; a timeout or a kill cancels what is in flight."""
        import asyncio

        from airflow_provider_eachlabs.batch.runner import BatchRunner
        from airflow_provider_eachlabs.transport import aio

        self._runner = runner = BatchRunner(config, self.hook, self.log)

        async def run() -> dict[str, Any]:
            async with aio.shared_session():
                return await runner.run()

        try:
            return asyncio.run(run())
        except BaseException:
            self.on_kill()
            raise

    def _finish(self, context: Context, config: BatchConfig, summary: dict[str, Any]) -> dict[str, Any]:
        """Log the outcome, leave it for the UI, fail when more items failed than allowed, and name the
        batch in its outlet Asset events (``assets``)."""
        from airflow_provider_eachlabs.assets import announce_batch
        from airflow_provider_eachlabs.batch.journal import Journal
        from airflow_provider_eachlabs.exceptions import EachlabsBatchError
        from airflow_provider_eachlabs.ledger import record_batch_try
        from airflow_provider_eachlabs.results import OUTCOME_KEY, batch_outcome

        record_batch_try(context, summary.pop("spend_tally", None) or {})
        budget_stop = summary.pop("budget_stop", None)  # max_cost stopped the creates (``batch.runner``)
        ok = summary["failed"] <= self.max_failed and not budget_stop
        if ok and self.review and summary.get("in_review"):
            self.log.info(
                "Batch finished: %d of %d items staged for review, %d failed, %d invalid; $%.2f spent",
                summary["in_review"],
                summary["items"],
                summary["failed"],
                summary["invalid"],
                summary["spend"],
            )
            self.ask_for_batch_review(context, summary)  # waits; resumes in batch_review_complete
        context["ti"].xcom_push(key=OUTCOME_KEY, value=batch_outcome(summary, model=config.model, ok=ok))

        self.log.info(
            "Batch finished: %d of %d items stored, %d failed, %d invalid; $%.2f spent; predict time "
            "p50 %s s, p95 %s s; every item's result is in %s",
            summary["succeeded"],
            summary["items"],
            summary["failed"],
            summary["invalid"],
            summary["spend"],
            summary["p50_predict_time"],
            summary["p95_predict_time"],
            summary["results_path"],
        )
        if budget_stop:
            from airflow_provider_eachlabs.exceptions import EachlabsBudgetError

            raise EachlabsBudgetError(str(budget_stop))
        if not ok:
            shown = "; ".join(f"{f['key']}: {f['error']}" for f in summary["first_failures"])
            raise EachlabsBatchError(
                f"{summary['failed']} of {summary['items']} items failed (max_failed={self.max_failed}): "
                f"{shown}. Every item's result is in {summary['results_path']}; a retry of the task "
                "redoes only the failed items.",
                final=bool(summary["all_failures_final"]),
            )
        announce_batch(
            context,
            summary,
            model=config.model,
            rows=lambda: _previous_rows(str(summary["results_path"]), self.log),
            log=self.log,
        )
        if summary["failed"] == 0:
            Journal(config.journal_path).remove()
        return summary

    # --- OpenLineage: called by apache-airflow-providers-openlineage only, which ``lineage`` needs ---

    def get_openlineage_facets_on_start(self) -> Any:
        """What the batch reads (its manifest, or the files its inline items name) as input datasets."""
        from airflow_provider_eachlabs.lineage import batch_input_files, batch_lineage

        files = batch_input_files(self.items, self.defaults, self.items_path)
        return batch_lineage(files, self._folder, self._results_file, model=str(self.model))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The inputs, the output folder and the results manifest, and the batch's counts and spend."""
        from airflow_provider_eachlabs.lineage import batch_input_files, batch_lineage

        files = batch_input_files(self.items, self.defaults, self.items_path)
        return batch_lineage(files, self._folder, self._results_file, task_instance, model=str(self.model))


class _JournalledUploads(dict[str, str]):
    """Uploads by content hash, kept in the journal, so a retry does not upload the same bytes again;
    ``files`` is the other way round (URL to hash), for ``reruns.input_digests``."""

    def __init__(self, journal: Journal) -> None:
        super().__init__(journal.state.uploads)
        self._journal = journal
        self.files = {url: digest for digest, url in journal.state.uploads.items()}

    def __setitem__(self, digest: str, url: str) -> None:
        super().__setitem__(digest, url)
        self.files[url] = digest
        self._journal.record({"upload": digest, "url": url})


def _previous_rows(results_path: str, log: Any) -> Iterator[dict[str, Any]]:
    """The rows of the results manifest an earlier try left, read as a stream; none when it is not
    there, a line that is not a JSON object is skipped (``Journal.seed`` checks the rest)."""
    import json

    from airflow_provider_eachlabs.batch.folder import Folder

    folder, _, name = results_path.rpartition("/")
    try:
        if not Folder(folder or ".").exists(name):
            return
        with Folder(folder or ".").open_text(name) as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(row, dict):
                    yield row
    except (OSError, ValueError) as error:
        log.warning("The earlier results manifest %s cannot be read (%s): not used", results_path, error)


class FluxFillBatchOperator(EachlabsBatchOperator):
    """flux-fill-pro over many images in one task: each item has ``FluxFillOperator``'s fields
    (``prompt``, ``image``, ``mask``, ``seed``, ``steps``, ...), checked by the model page's rules;
    local and object-storage images are uploaded once each (by content), a missing mask comes from
    the image's alpha channel, and each output is stored as ``<key>.<output_format>``.

    Every other argument is ``EachlabsBatchOperator``'s, without ``model``.
    """

    format_field = "output_format"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(model="flux-fill-pro", **kwargs)

    def start_checks(self) -> None:
        """The model page's rules are checked field by field (``FluxFillInput``), not by a schema."""

    def check_item(self, item: BatchItem) -> dict[str, Any]:
        """Fields by the model page, then local files read: format, and the mask's size."""
        return self._read(item)[0]

    def prepare_item(self, item: BatchItem, uploads: dict[str, str]) -> dict[str, Any]:
        from airflow_provider_eachlabs.batch.runner import QuietLog
        from airflow_provider_eachlabs.masks import mask_from_alpha
        from airflow_provider_eachlabs.storage import upload_image

        body, files = self._read(item)
        if "mask" not in body:
            files["mask"] = mask_from_alpha(files.get("image") or self._image_at(body["image"]))
        for image_file in files.values():
            body[image_file.field] = upload_image(
                self.hook.upload_bytes, image_file, uploads, QuietLog(self.log)
            )
        return body

    def _read(self, item: BatchItem) -> tuple[dict[str, Any], dict[str, ImageFile]]:
        from dataclasses import fields

        from airflow_provider_eachlabs.exceptions import EachlabsInputError
        from airflow_provider_eachlabs.inputs import FluxFillInput, is_web_reference
        from airflow_provider_eachlabs.storage import check_fill_inputs, load_image

        merged = {**self.defaults, **item.fields}
        known = {field.name for field in fields(FluxFillInput)}
        for name in merged:
            if name not in known:
                raise EachlabsInputError(
                    item.field_name(name), merged[name], f"is not a field of {self.model}"
                )
        try:
            body = FluxFillInput.validate(**merged, api_host=self.hook.host).to_api()
            files = {
                field: load_image(field, body[field])
                for field in ("image", "mask")
                if body.get(field) and not is_web_reference(body[field])
            }
            if "mask" in files:
                check_fill_inputs(files.get("image"), files["mask"])
        except EachlabsInputError as error:
            raise EachlabsInputError(item.field_name(error.field), error.value, error.rule) from None
        return body, files

    def _image_at(self, url: str) -> ImageFile:
        """An image given by URL, fetched with the download rules, for the mask its alpha makes."""
        from airflow_provider_eachlabs.exceptions import EachlabsInputError
        from airflow_provider_eachlabs.imageinfo import read_image_info
        from airflow_provider_eachlabs.storage import ImageFile

        content = self.hook.download(url, self.max_output_bytes).content
        info = read_image_info(content)
        if info is None:
            raise EachlabsInputError("image", url, "must be a JPEG, PNG or WebP image (its bytes are not)")
        return ImageFile("image", url, content, info)


def _count(value: Any) -> int | None:
    """A try number or ``max_tries`` as Airflow gives it, or None (a test's stand-in has none)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _json_line(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":")) + "\n"
