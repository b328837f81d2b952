"""BatchReviewMixin: a batch's outputs wait for a person before they reach ``output_path``
(``review=True`` on ``EachlabsBatchOperator`` and ``FluxFillBatchOperator``).

One concern, mixed into the batch operators. With review the batch loop stores each output in a
staging folder inside ``output_path`` (``review.staging_root``; its results rows say
``"review": "pending"``), so nothing in ``output_path`` itself changes before approval. When the batch
ends, ``ask_for_batch_review`` writes one Airflow human-in-the-loop request for all the staged
outputs and parks the task as the single fill's review does (``awaiting_input`` on Airflow 3.3, a
``HITLTrigger`` on 3.2). The answer arrives in ``batch_review_complete``:

- **Approve** (the items in ``reject`` left out): each approved output is copied from staging into
  ``output_path`` (written atomically; its sha256 checked against its row) and then deleted from
  staging; each rejected one is recorded as ``rejected``; the results manifest is rewritten, the Asset
  events name only what was stored, and the task succeeds.
- **Reject**: the task fails, final, with the note; nothing is stored.
- **Re-fill**: the items in ``refill`` get their new prompts (kept in the task record's ``review``,
  so every later step, a retry included, sends them), the batch is planned again and runs for what
  changed (the journal's re-run rule buys an item whose input changed, and re-uses the others), and
  the new outputs are reviewed again, at most ``max_review_rounds`` rounds.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_eachlabs.batch.journal import Journal
    from airflow_provider_eachlabs.batch.runner import BatchConfig
    from airflow_provider_eachlabs.review import BatchVerdict


class BatchReviewMixin:
    """What ``review=True`` adds to a batch operator (see the module's docstring)."""

    review: bool
    max_review_rounds: int
    review_timeout: timedelta | None
    on_review_timeout: str
    # The prompts reviewers gave for re-fills so far, by item key (the task record's ``review``).
    _review_prompts: dict[str, str]

    if TYPE_CHECKING:  # what the host operator has (EachlabsBatchOperator)
        log: Any
        hook: Any
        model: str
        deferrable: bool
        max_failed: int

        def _config(self, context: Context, total_items: int | None) -> BatchConfig: ...

        def _plan(self, context: Context) -> BatchConfig: ...

        def _run(self, context: Context, config: BatchConfig) -> Any: ...

        @property
        def _folder(self) -> str: ...

        @property
        def _results_file(self) -> str: ...

        def _journal_path(self, context: Context) -> str: ...

    # --- the record ------------------------------------------------------------------------------

    def load_review(self, context: Context) -> dict[str, Any]:
        """The review under way (its round and the re-fill prompts), which planning applies."""
        from airflow_provider_eachlabs.record import TaskRecord

        if not self.review:
            self._review_prompts = {}
            return {}
        review = TaskRecord.load(context).review
        prompts = review.get("prompts")
        self._review_prompts = (
            {str(k): str(v) for k, v in prompts.items()} if isinstance(prompts, dict) else {}
        )
        return review

    def staging_path(self, context: Context) -> str | None:
        from airflow_provider_eachlabs.review import staging_root

        if not self.review:
            return None
        return staging_root(self._folder, self._journal_path(context).rstrip("/").rsplit("/", 1)[-1])

    # --- asking ----------------------------------------------------------------------------------

    def ask_for_batch_review(
        self, context: Context, summary: dict[str, Any], problem: str | None = None
    ) -> None:
        """Leave the outcome for the tab (awaiting review, the round, how many are staged), write the
        human-in-the-loop request and wait for the answer without holding a worker slot."""
        from airflow_provider_eachlabs import review as rules
        from airflow_provider_eachlabs.operators.review import review_tab, wait_for_answer, write_request
        from airflow_provider_eachlabs.record import TaskRecord
        from airflow_provider_eachlabs.results import OUTCOME_KEY, batch_outcome

        record = TaskRecord.load(context)
        round_number = int(record.review.get("round") or 1)
        record.review = {**record.review, "round": round_number}
        record.save(context)
        outcome = {
            **batch_outcome(summary, model=str(self.model), ok=False),
            "status": "awaiting review",
            "review_round": round_number,
            "max_review_rounds": self.max_review_rounds,
            "in_review": summary.get("in_review"),
            "staging_path": self.staging_path(context),
        }
        if problem:
            outcome["review_problem"] = problem[:1000]
        ti = context["ti"]
        ti.xcom_push(key=OUTCOME_KEY, value=outcome)
        form = rules.batch_params()
        defaults = write_request(
            ti,
            subject=f"{rules.BATCH_SUBJECT}{ti.task_id} ({ti.dag_id})",
            body=rules.batch_body(ti.task_id, self.max_review_rounds, review_tab(ti)),
            form=form,
            review_timeout=self.review_timeout,
            on_review_timeout=self.on_review_timeout,
        )
        self.log.info(
            "%d outputs are staged in %s and wait for a review (round %d of at most %d): answer it in "
            "Required Actions or in the task's Eachlabs tab; nothing is stored in %s before",
            summary.get("in_review") or 0,
            self.staging_path(context),
            round_number,
            self.max_review_rounds,
            self._folder,
        )
        wait_for_answer(self, ti.id, defaults, form, self.review_timeout, "batch_review_complete")

    # --- the answer ------------------------------------------------------------------------------

    def batch_review_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume with the reviewer's answer: store the approved outputs, fail, or re-fill."""
        from airflow_provider_eachlabs.failing import final_errors_fail_the_task
        from airflow_provider_eachlabs.results import outcome_reported

        with final_errors_fail_the_task(), outcome_reported(context, lambda: None, str(self.model)):
            return self._batch_answered(context, event)

    def _batch_answered(self, context: Context, event: dict[str, Any] | None) -> Any:
        from airflow_provider_eachlabs import review as rules
        from airflow_provider_eachlabs.batch.journal import Journal
        from airflow_provider_eachlabs.batch.runner import summarize
        from airflow_provider_eachlabs.record import TaskRecord

        self.hook.mask_secrets()  # a resumed worker: nothing masked the key in this process yet
        config = self._config(context, total_items=None)
        journal = Journal(config.journal_path)
        journal.replay(journal.plan_keys(), self.log)
        staged = _staged(journal)
        record = TaskRecord.load(context)
        round_number = int(record.review.get("round") or 1)
        try:
            answer = rules.batch_verdict(event, staged)
        except rules.ReviewAnswerUnreadable as error:
            self.log.warning("The review's answer cannot be applied, so it is asked again: %s", error)
            summary = summarize(_rows(journal), config.results_path, 0, 0)
            self.ask_for_batch_review(context, summary, problem=f"The last answer was not applied: {error}")
            return None
        self.log.info(
            "Review round %d of %d staged outputs: %s%s%s%s%s",
            round_number,
            len(staged),
            answer.choice,
            f" by {answer.by}" if answer.by else (" (the review's timeout)" if answer.timed_out else ""),
            f", rejecting {len(answer.reject)}: {', '.join(answer.reject[:10])}" if answer.reject else "",
            f", re-filling {len(answer.refill)}: {', '.join(list(answer.refill)[:10])}"
            if answer.refill
            else "",
            f", note: {answer.note}" if answer.note else "",
        )
        if answer.choice == rules.REJECT:
            self._end_batch_review(context, record)
            raise rules.ReviewRejected(rules.batch_rejection(answer, round_number, len(staged)))
        if answer.choice == rules.REFILL:
            if round_number >= self.max_review_rounds:
                self._end_batch_review(context, record)
                raise rules.ReviewRoundsExhausted(rules.batch_exhausted(self.max_review_rounds))
            prompts = {**self._review_prompts_of(record), **answer.refill}
            record.review = {"round": round_number + 1, "prompts": prompts}
            record.save(context)
            self.log.info(
                "Re-fill for review round %d: %d items get a new prompt (%s); the others stay staged",
                round_number + 1,
                len(answer.refill),
                ", ".join(f"{key}: {prompt!r}" for key, prompt in list(answer.refill.items())[:10]),
            )
            return self._run(context, self._plan(context))
        return self._approve(context, config, journal, answer, round_number, record)

    def _approve(
        self,
        context: Context,
        config: BatchConfig,
        journal: Journal,
        answer: BatchVerdict,
        round_number: int,
        record: Any,
    ) -> dict[str, Any]:
        """Publish the approved outputs, record the rejected ones, and succeed as a batch does."""
        from airflow_provider_eachlabs.assets import announce_batch
        from airflow_provider_eachlabs.batch.folder import Folder
        from airflow_provider_eachlabs.batch.runner import summarize, write_results
        from airflow_provider_eachlabs.results import OUTCOME_KEY, batch_outcome

        staging = str(self.staging_path(context))
        stored, rejected = publish(journal, staging, self._folder, answer, round_number, self.log)
        rows = _rows(journal)
        write_results(config.results_path, rows)
        summary = summarize(rows, config.results_path, 0, 0)
        summary["review_round"] = round_number
        self.log.info(
            "Review approved by %s: %d outputs stored in %s, %d rejected (not stored); every item's "
            "result is in %s",
            answer.by or "the review's timeout",
            stored,
            self._folder,
            rejected,
            config.results_path,
        )
        context["ti"].xcom_push(
            key=OUTCOME_KEY,
            value={**batch_outcome(summary, model=config.model, ok=True), "rejected": rejected},
        )
        announce_batch(context, summary, model=config.model, rows=lambda: iter(rows), log=self.log)
        self._end_batch_review(context, record)
        Folder(staging).remove()
        Folder(staging.rsplit("/", 1)[0]).remove_if_empty()
        if summary["failed"] == 0:
            journal.remove()
        return summary

    @staticmethod
    def _review_prompts_of(record: Any) -> dict[str, str]:
        prompts = record.review.get("prompts")
        return {str(k): str(v) for k, v in prompts.items()} if isinstance(prompts, dict) else {}

    @staticmethod
    def _end_batch_review(context: Context, record: Any) -> None:
        """The review is over; the re-fill prompts stay (a clear keeps sending what was reviewed)."""
        prompts = BatchReviewMixin._review_prompts_of(record)
        record.review = {"prompts": prompts} if prompts else {}
        record.save(context)


def _rows(journal: Journal) -> list[dict[str, Any]]:
    from airflow_provider_eachlabs.batch.journal import DONE

    return [item.row for item in journal.state.items.values() if item.state == DONE and item.row]


def _staged(journal: Journal) -> dict[str, dict[str, Any]]:
    """The rows of the items whose output waits in the staging folder, by key."""
    from airflow_provider_eachlabs.batch.runner import PENDING, SUCCESS

    return {
        str(row["key"]): row
        for row in _rows(journal)
        if row.get("status") == SUCCESS and row.get("review") == PENDING
    }


def publish(
    journal: Journal, staging: str, output_path: str, answer: BatchVerdict, round_number: int, log: Any
) -> tuple[int, int]:
    """Move each approved staged output into ``output_path`` (read, checked against its row's sha256,
    written atomically, then deleted from staging) and mark the rejected ones, recording each row in
    the journal; written before any staged file is deleted, so a worker that dies half-way leaves a
    retry that publishes the rest. Returns how many were stored and how many rejected."""
    from airflow_provider_eachlabs import review as rules
    from airflow_provider_eachlabs.batch.folder import Folder
    from airflow_provider_eachlabs.batch.journal import DONE
    from airflow_provider_eachlabs.exceptions import EachlabsBatchError

    staged_in, out = Folder(staging), Folder(output_path)
    moved: list[str] = []
    stored = rejected = 0
    for key, row in _staged(journal).items():
        folder, _, name = str(row.get("stored_path") or "").rpartition("/")
        if key in answer.reject:
            new = {
                **row,
                "status": "rejected",
                "prediction_status": "success",
                "review": "rejected",
                "stored_path": None,
                "error": rules.item_rejection(answer, round_number),
                "final": True,
            }
            rejected += 1
        else:
            if folder.rstrip("/") != staged_in.root:
                raise EachlabsBatchError(
                    f"item {key!r}: its staged output {row.get('stored_path')} is not in the staging folder "
                    f"{staging}; nothing more was stored",
                    final=True,
                )
            content = staged_in.read(name)
            if hashlib.sha256(content).hexdigest() != row.get("sha256"):
                raise EachlabsBatchError(
                    f"item {key!r}: its staged output {row.get('stored_path')} changed since the batch "
                    "stored it (its sha256 is not the one recorded); it was not published. Clear the task to "
                    "review again.",
                    final=True,
                )
            out.write(name, content)
            new = {**row, "stored_path": f"{out.root}/{name}", "review": "approved"}
            moved.append(name)
            stored += 1
        journal.record({"key": key, "state": DONE, "row": new})
    journal.flush()
    for name in moved:
        staged_in.delete(name)
    log.info("Published %d approved outputs from %s to %s", stored, staging, output_path)
    return stored, rejected
