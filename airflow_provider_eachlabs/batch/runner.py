"""The batch loop: paced creates, one poll loop over every prediction in flight, each output stored
as soon as its prediction succeeds, and the journal and the results manifest kept as it goes.

The same loop runs on a worker (``asyncio.run`` in the operator) and in the triggerer
(``BatchTrigger``). It is one reactor: each turn it starts the creates the pacer allows and the looks
that are due, then sleeps until the next one is due or a finished request wakes it, so a slot freed
by a prediction's end is refilled at once, not at the next poll of the whole set. Status requests go
through the event loop's shared aiohttp session; everything that blocks (a create through the hook's
exactly-once submit, downloads, storage, journal writes) runs in the batch's own small thread pool,
so neither the loop nor, in the triggerer, any other trigger waits on it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import IO, TYPE_CHECKING, Any, TypeVar

from airflow_provider_eachlabs import api, metrics
from airflow_provider_eachlabs.batch.folder import Folder
from airflow_provider_eachlabs.batch.journal import (
    CREATED,
    DONE,
    QUEUED,
    SENDING,
    ItemState,
    Journal,
    PlanEntry,
)
from airflow_provider_eachlabs.batch.pacer import Pacer
from airflow_provider_eachlabs.batch.schedule import LearnedSchedule
from airflow_provider_eachlabs.budget import Budget, to_micro
from airflow_provider_eachlabs.exceptions import (
    EachlabsAuthError,
    EachlabsBatchError,
    EachlabsBudgetError,
    EachlabsConfigError,
    EachlabsError,
    EachlabsNotFoundError,
    EachlabsPaymentRequiredError,
    EachlabsRateLimitError,
    EachlabsStorageError,
    PredictionCancelled,
    PredictionFailed,
    is_final,
)
from airflow_provider_eachlabs.reruns import Choice, Decision, Earlier, decide, fresh_this_run, rejection
from airflow_provider_eachlabs.storage import write_atomically

if TYPE_CHECKING:
    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

T = TypeVar("T")
THREADS = 8
PLAN_CHUNK = 256
JOURNAL_SECONDS = 1.0
RESULTS_SECONDS = 10.0
# Errors that no other item would escape: the batch stops creating, finishes what it bought, and fails.
BATCH_ENDING_ERRORS = (EachlabsAuthError, EachlabsPaymentRequiredError, EachlabsConfigError)
SUCCESS, INVALID, REJECTED = "success", "invalid", "rejected"
PENDING = "pending"  # a results row's ``review`` while its output waits in the staging folder
# How a decision names the prediction of a create whose answer never came (it is looked for first).
LOST_CREATE = "(the create an earlier try sent, whose answer was lost)"


class QuietLog:
    """The hook's per-item lines (one per create, one per stored file: thousands in a batch) stay out
    of the task's log, which gets the batch's progress lines instead; warnings and errors pass."""

    def __init__(self, log: Any) -> None:
        self._log = log

    def debug(self, *args: Any, **kwargs: Any) -> None:
        """Dropped."""

    info = debug

    def warning(self, *args: Any, **kwargs: Any) -> None:
        self._log.warning(*args, **kwargs)

    def error(self, *args: Any, **kwargs: Any) -> None:
        self._log.error(*args, **kwargs)


def batch_hook(conn_id: str, log: Any) -> EachlabsHook:
    """The hook a batch sends through: the connection's, with its per-item lines left out."""
    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

    hook = EachlabsHook(conn_id)
    hook._log = QuietLog(log)  # type: ignore[assignment]
    return hook


@dataclass(frozen=True)
class BatchConfig:
    """Everything the loop needs, all plain values: a trigger carries it through ``serialize()``."""

    model: str
    eachlabs_conn_id: str
    output_path: str
    results_path: str
    journal_path: str
    format_field: str | None = None
    max_in_flight: int = 10
    creates_per_minute: int = 100
    poll_interval: float | None = None
    expected_seconds: float = 5.0
    deadline: float | None = None
    item_retries: int = 2
    retry_unknown_failures: bool = True
    max_output_bytes: int = 50 * 1024 * 1024
    progress_seconds: float = 10.0
    total_items: int | None = None
    fresh: bool = False
    try_number: int | None = None
    max_tries: int | None = None
    # ``max_cost`` and the price of one prediction, in USD (``budget``); None: no budget.
    max_cost: float | None = None
    price: float | None = None
    # With ``review=True``: the folder outputs are stored in until a reviewer approves them (inside
    # ``output_path``, ``review.staging_root``); their rows say ``"review": "pending"``.
    staging_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Watch:
    """A prediction in flight: when to look at it next, and what to send again if it must be redone."""

    key: str
    input: dict[str, Any]
    prediction_id: str
    created_at: float
    next_at: float
    busy: bool = False


@dataclass
class Progress:
    """What the log line and the summary count."""

    started: float = field(default_factory=time.time)
    creates: int = 0
    gets: int = 0
    redone: int = 0


class BatchRunner:
    """Run every item of the journal and the plan to an end; ``run`` returns the summary."""

    def __init__(self, config: BatchConfig, hook: EachlabsHook, log: Any) -> None:
        self.config = config
        self.hook = hook
        self.log = log
        self.journal = Journal(config.journal_path)
        self.pacer = Pacer(config.max_in_flight, config.creates_per_minute)
        self.schedule = LearnedSchedule(config.expected_seconds, config.poll_interval)
        self.queue: deque[tuple[str, dict[str, Any], float | None]] = deque()  # key, input, look-first
        self.watches: dict[str, Watch] = {}
        self.retries: Counter[str] = Counter()
        self.progress = Progress()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="eachlabs-batch")
        self._plan: Iterator[PlanEntry] | None = None
        self._plan_handle: IO[str] | None = None
        self._plan_done = False
        self._stopping: BaseException | None = None
        self._results_dirty = True
        self._done_before = 0
        self._kept: list[tuple[str, str]] = []  # stored by an earlier try: key, prediction id
        self._buy: set[str] = set()  # items the journal knows whose current input is bought anew
        self._changed: dict[str, Earlier] = {}  # of those, the ones whose input changed
        # The input key and digests of a queued item's first create (later ones: the journal's).
        self._sending: dict[str, tuple[str | None, dict[str, str] | None]] = {}
        self._reused: tuple[int, str, Decision | None] = (0, "", None)  # how many, and one example
        # Ends of predictions to count in the metrics once the journal that records them is written:
        # a batch resumed from its journal (a triggerer restart, a retry) then never counts one twice.
        self._ends: list[Callable[[], None]] = []
        # Creates sent whose prediction the journal does not hold yet: ``max_cost`` counts them.
        self._creating = 0

    # --- the loop -----------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        try:
            index = await self._io(self.journal.plan_index)
            await self._io(self.journal.replay, index.keys(), self.log)
            self._resume(index)
            self._done_before = len(self.rows())
            rereads = asyncio.Semaphore(self.config.max_in_flight)
            for key, prediction_id in self._kept:
                self._spawn(self._reread(key, prediction_id, rereads))
            await self._loop()
            await self._write_journal()
            await self._io(write_results, self.config.results_path, self.rows())
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            if self._plan_handle is not None:
                self._plan_handle.close()
        if isinstance(self._stopping, EachlabsBudgetError):  # the task fails once its ledger is written
            left = self.config.total_items - len(self.rows()) if self.config.total_items is not None else None
            not_started = f"{left} items not started" if left is not None else "the rest not started"
            return {
                **self.summary(),
                "budget_stop": f"{self._stopping}; the batch stopped creating ({not_started}) and finished "
                f"what was in flight: see {self.config.results_path}. A clear with a higher max_cost "
                "buys the rest, re-using what was bought.",
            }
        if self._stopping is not None:
            raise self._stopping
        return self.summary()

    def _resume(self, index: dict[str, str | None]) -> None:
        """What earlier tries left, item by item, against the key of the input each item sends now
        (``index``): progress of another input is left and the item bought anew; for the same input
        ``reruns.decide`` says whether to re-use (in flight is watched again, sent without an answer
        is looked for first, stored is kept), refuse (rejected before) or buy (failed, or fresh)."""
        now = time.time()
        refused = 0
        for key, item in self.journal.state.items.items():
            current = index.get(key)
            if current is None:  # invalid now: the plan recorded why
                continue
            earlier = self._earlier(item)
            if item.input_key is not None and item.input_key != current:
                self._buy.add(key)
                if earlier is not None:
                    self._changed[key] = earlier  # said when its plan line, with its digests, is read
                continue
            if earlier is None:  # nothing bought for it yet (never sent, invalid before, create refused)
                self._buy.add(key)
                continue
            decision = decide(earlier, current, item.digests or {}, fresh=self.config.fresh)
            if decision.choice is Choice.BUY:
                self.log.info("Item %s: %s", key, decision.reason)
                self._buy.add(key)
            elif decision.choice is Choice.REFUSE:
                self.log.warning("Item %s: %s", key, decision.reason)
                refused += 1
                row = {**(item.row or {}), "status": "failed", "error": decision.reason, "final": True}
                self._done(key, {**row, "cost": None})  # its cost was counted by the try that bought it
            else:
                count, example, said = self._reused
                self._reused = (count + 1, example or key, said or decision)
                if item.try_number != self.config.try_number:  # not a resume of this same try
                    metrics.reused(self._tags)
                self._reuse(key, item, now)
        count, example, said = self._reused
        if said is not None:
            self.log.info(
                "%d items unchanged since an earlier try re-use what it bought (in flight: watched "
                "again; stored: kept, and stored again if the file is gone); for example item %s: %s",
                count,
                example,
                said.reason,
            )
        if self.journal.state.items:
            self.log.info(
                "Resuming the batch: %d items kept from earlier tries, %d predictions to re-attach to, "
                "%d lost creates to look for, %d items to buy anew (%d of them changed), %d refused",
                len(self._kept),
                len(self.watches),
                len(self.queue),
                len(self._buy),
                len(self._changed),
                refused,
            )

    def _earlier(self, item: ItemState) -> Earlier | None:
        """What an earlier try bought for the item and how it stands, as the journal says (the API is
        asked again: a kept item is re-read, a re-attached one watched); None when nothing was."""
        return earlier_purchase(item, self.config.max_tries)

    def _reuse(self, key: str, item: ItemState, now: float) -> None:
        row = item.row or {}
        if item.state == CREATED and item.prediction_id:
            self._reattach(key, item, item.created_at or now, now)
        elif item.state == SENDING and item.input is not None:
            self.queue.append((key, item.input, item.sent_at))
        elif row.get("status") == SUCCESS and item.prediction_id:
            row["cost"] = None  # until the API says it again: see _reread
            self._kept.append((key, item.prediction_id))
        elif item.prediction_id:  # paid for but not stored: re-attach and store it, never buy it again
            self._reattach(key, item, now, now)

    def _reattach(self, key: str, item: ItemState, created_at: float, now: float) -> None:
        """Watch a prediction an earlier try created, counted by the pacer as one this try sent: it
        holds a slot until its end is seen (``_end_watch`` frees one) and counts in the minute it was
        made. Uncounted, every re-attached prediction would free a slot it never took, and a resumed
        batch would create past the API's in-flight cap, beside the predictions still running."""
        assert item.prediction_id is not None
        self.pacer.sending()
        self.pacer.created(item.created_at or now)
        self._watch(key, item.input or {}, item.prediction_id, created_at, now)

    async def _reread(self, key: str, prediction_id: str, rereads: asyncio.Semaphore) -> None:
        """The cost of an item an earlier try stored, as the API tells it now, never as the journal
        does: whoever can write the journal could write any number there. A prediction the API does
        not call a success (or does not know) fails the item, so the task's retry buys it, and a
        transient error leaves its cost out of the spend, with a warning. A stored file that is gone
        is stored again from the prediction, never bought again."""
        async with rereads:
            try:
                prediction = await self.hook.aget_prediction(prediction_id)
            except EachlabsError as error:
                if not is_final(error):
                    self.log.warning("Item %s: its cost is left out of the spend: %s", key, error)
                    return
                said = str(error)
            else:
                if prediction.succeeded:
                    item = self.journal.state.items[key]
                    row = item.row or {}
                    if not await self._io(_exists, row.get("stored_path")):
                        self.log.info(
                            "Item %s: its stored output %s is gone: storing prediction %s again",
                            key,
                            row.get("stored_path"),
                            prediction_id,
                        )
                        watch = Watch(key, item.input or {}, prediction_id, time.time(), time.time())
                        await self._store(watch, prediction)
                        return
                    self._done(key, {**row, **_figures(prediction), "output_url": row.get("output_url")})
                    return
                said = f"it is {prediction.status!r}"
            finally:
                self.progress.gets += 1
        error_text = f"the journal says it was stored, but the API disagrees about {prediction_id}: {said}"
        self._done(
            key, {"prediction_id": prediction_id, "status": "failed", "error": error_text, "final": False}
        )

    async def _loop(self) -> None:
        next_journal = next_progress = time.time()
        next_results = time.time() + RESULTS_SECONDS
        while True:
            now = time.time()
            if self.config.deadline is not None and now >= self.config.deadline:
                await self._time_out()
                return
            await self._start_creates(now)
            self._start_looks(now)
            if now >= next_journal:
                if self.journal.has_pending:
                    self._spawn(self._write_journal())
                next_journal = now + JOURNAL_SECONDS
            if now >= next_results:
                if self._results_dirty:
                    self._results_dirty = False
                    self._spawn(self._io(write_results, self.config.results_path, self.rows()))
                next_results = now + RESULTS_SECONDS
            if now >= next_progress:
                self._log_progress(now)
                next_progress = now + self.config.progress_seconds
            if self._finished():
                return
            self._wake.clear()
            wait = min(self._next_due(now), next_journal, next_results, next_progress) - time.time()
            await wait_for_event(self._wake, max(wait, 0.0))  # the tasks just started run meanwhile

    def _finished(self) -> bool:
        nothing_left = self._plan_done and not self.queue
        stopping = self._stopping is not None
        return (nothing_left or stopping) and not self.watches and not self._busy_tasks()

    def _busy_tasks(self) -> bool:
        return any(not task.done() for task in self._tasks)

    def _next_due(self, now: float) -> float:
        due = [watch.next_at for watch in self.watches.values() if not watch.busy]
        if self._stopping is None and (self.queue or not self._plan_done):
            delay = self.pacer.delay(now)
            if delay is not None:
                due.append(now + delay)
        return min(due, default=now + 1.0)

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(self._guarded(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, work: Any) -> None:
        """Run one piece of work; whatever it raises stops the batch (after what is in flight ends)."""
        try:
            await work
        except Exception as error:
            if self._stopping is None:
                self._stopping = error
        finally:
            self._wake.set()

    async def _io(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))

    # --- creates ------------------------------------------------------------------------------------

    async def _start_creates(self, now: float) -> None:
        """Send as many creates as the pacer allows now. The plan is read ahead of the pacer, so the
        batch knows when nothing is left even while the minute's creates are all spent."""
        while self._stopping is None:
            if not self.queue and not self._plan_done:
                await self._read_plan()
            if not self.queue or self.pacer.delay(now) != 0.0 or not self._within_budget():
                return
            key, input_, look_first = self.queue.popleft()
            self.pacer.sending()
            self._creating += 1
            self._spawn(self._counted_create(key, input_, look_first))

    def _within_budget(self) -> bool:
        """Whether one more create fits in ``max_cost``: what the journal's predictions cost over every
        try (in flight at the price) plus the creates under way, plus this one. When it does not,
        the batch stops creating; what is in flight ends, and the task fails with the figures."""
        if self.config.max_cost is None or self.config.price is None:
            return True
        price = to_micro(self.config.price)
        tally = self.journal.state.spend
        spent = tally.committed(price) + self._creating * price
        budget = Budget(to_micro(self.config.max_cost), price, spent)
        if budget.can_buy(1):
            return True
        flying = len(self.watches) + self._creating
        self._stopping = EachlabsBudgetError(budget.refusal(tally.ids, in_flight=flying))
        self.log.error("Stopping the batch: %s", self._stopping)
        return False

    async def _counted_create(self, key: str, input_: dict[str, Any], look_first: float | None) -> None:
        try:
            await self._create(key, input_, look_first)
        finally:
            self._creating -= 1

    async def _read_plan(self) -> None:
        """The next items of the plan to buy: new ones, and those ``_resume`` left to buy anew, each
        with the input it has now (never an earlier try's)."""
        chunk = await self._io(self._plan_chunk)
        if not chunk:
            self._plan_done = True
        known = self.journal.state.items
        for entry in chunk:
            if entry.key in known and entry.key not in self._buy:
                continue
            earlier = self._changed.pop(entry.key, None)
            if earlier is not None and entry.input_key is not None:
                decision = decide(earlier, entry.input_key, entry.digests or {}, fresh=self.config.fresh)
                self.log.info("Item %s: %s", entry.key, decision.reason)
            assert entry.input is not None
            self._sending[entry.key] = (entry.input_key, entry.digests)
            self.queue.append((entry.key, entry.input, None))

    def _plan_chunk(self) -> list[PlanEntry]:
        """The next valid items of the plan (lines without an input are invalid items)."""
        if self._plan is None:
            self._plan_handle = handle = self.journal.open_plan()
            entries = (self.journal.plan_entry(line, number) for number, line in enumerate(handle, start=1))
            self._plan = (entry for entry in entries if entry.input is not None)
        return list(islice(self._plan, PLAN_CHUNK))

    async def _create(self, key: str, input_: dict[str, Any], look_first: float | None) -> None:
        """Announce the create in the journal, then send it exactly once (or find what an earlier
        try's lost create made), and watch the prediction."""
        found: str | None = None
        if look_first is not None:
            found = await self._io(
                self.hook.find_prediction,
                self.config.model,
                input_,
                since=look_first,
                exclude=self._known_ids(),
            )
            if found:
                self.log.info("Item %s: found prediction %s that an earlier create made", key, found)
        sent_at = time.time()
        if not found:
            self.journal.record(
                {"key": key, "state": SENDING, "at": sent_at, "input": input_, **self._bought(key)}
            )
            await self._write_journal()
        try:
            prediction_id = found
            if prediction_id is None:
                prediction_id = await self._io(
                    self._submit,
                    self.config.model,
                    input_,
                    since=sent_at,
                    exclude=self._known_ids(),
                    retry_rate_limits=False,
                )
        except EachlabsRateLimitError as error:
            self.pacer.not_created(time.time(), error.retry_after if error.retry_after is not None else 1.0)
            self.log.warning("Item %s: 429 from the API (%s); every create waits", key, error)
            self.journal.record({"key": key, "state": QUEUED})
            self.queue.appendleft((key, input_, None))
            return
        except EachlabsError as error:
            self._create_failed(key, input_, sent_at, error)
            return
        self.progress.creates += not found
        now = time.time()
        self.pacer.created(now)
        self.journal.record({"key": key, "state": CREATED, "id": prediction_id, "at": now})
        self._watch(key, input_, prediction_id, now, now)

    def _submit(self, model: str, input_: dict[str, Any], **kwargs: Any) -> str:
        """The hook's exactly-once create, counted as bought in its thread the moment it returns: a
        cancel of the batch (a triggerer restart) while the create is under way leaves it counted,
        and the next run finds it rather than buying it again."""
        prediction_id = self.hook.submit_prediction(model, input_, **kwargs)
        metrics.bought(self._tags)
        return prediction_id

    def _create_failed(self, key: str, input_: dict[str, Any], sent_at: float, error: EachlabsError) -> None:
        maybe_created = api.create_outcome_unknown(error)
        if maybe_created:  # counted in the minute; its slot is freed, to be taken again by the lookup
            self.pacer.created(time.time())
            self.pacer.finished()
        else:
            self.pacer.not_created(time.time())
        if isinstance(error, BATCH_ENDING_ERRORS) or (
            isinstance(error, EachlabsNotFoundError) and not maybe_created
        ):
            self.log.error("Stopping the batch: %s", error)
            self._stopping = self._stopping or error
            self.journal.record({"key": key, "state": QUEUED})
            return
        if is_final(error) or self.retries[key] >= self.config.item_retries:
            self._done(key, {"status": "failed", "error": str(error), "final": is_final(error)})
            return
        self.retries[key] += 1
        self.log.warning("Item %s: the create failed (%s); it is tried again", key, error)
        self.queue.append((key, input_, sent_at if maybe_created else None))

    def _bought(self, key: str) -> dict[str, Any]:
        """What a create announces about itself: the key and digests of the input it sends, this try,
        the ``max_tries`` of this run or clear, and whether ``fresh_prediction`` is set."""
        item = self.journal.state.items.get(key)
        known = (item.input_key, item.digests) if item is not None else (None, None)
        input_key, digests = self._sending.pop(key, known)
        return {
            "input_key": input_key,
            "digests": digests,
            "try_number": self.config.try_number,
            "max_tries": self.config.max_tries,
            "fresh": self.config.fresh,
        }

    def _known_ids(self) -> set[str]:
        return {item.prediction_id for item in self.journal.state.items.values() if item.prediction_id}

    # --- looks --------------------------------------------------------------------------------------

    def _watch(
        self, key: str, input_: dict[str, Any], prediction_id: str, created_at: float, now: float
    ) -> None:
        first = now + self.schedule.delay(now - created_at)
        self.watches[key] = Watch(key, input_, prediction_id, created_at, first)

    def _start_looks(self, now: float) -> None:
        for watch in list(self.watches.values()):
            if not watch.busy and watch.next_at <= now:
                watch.busy = True
                self._spawn(self._look(watch))

    async def _look(self, watch: Watch) -> None:
        try:
            prediction = await self.hook.aget_prediction(watch.prediction_id)
        except EachlabsError as error:
            watch.busy = False
            if is_final(error):
                self._end_watch(watch)
                self._done(
                    watch.key, {"prediction_id": watch.prediction_id, "status": "failed", "error": str(error)}
                )
            else:
                watch.next_at = time.time() + max(1.0, self.schedule.delay(time.time() - watch.created_at))
            return
        finally:
            self.progress.gets += 1
        now = time.time()
        if not prediction.is_terminal:
            watch.busy = False
            watch.next_at = now + self.schedule.delay(now - watch.created_at)
            return
        self._end_watch(watch)
        ran = api.non_negative_number(prediction.metrics.get("predict_time"))
        self.schedule.observe(ran if ran is not None else now - watch.created_at)
        if prediction.succeeded:
            await self._store(watch, prediction)
            return
        self._prediction_failed(watch, prediction)

    def _end_watch(self, watch: Watch) -> None:
        self.watches.pop(watch.key, None)
        self.pacer.finished()

    def _prediction_failed(self, watch: Watch, prediction: api.Prediction) -> None:
        try:
            api.raise_for_prediction_end(
                prediction, retry_unknown_failures=self.config.retry_unknown_failures
            )
        except (PredictionFailed, PredictionCancelled) as error:
            failure: EachlabsError = error
        else:  # a terminal status the provider reads as neither success nor failure
            failure = EachlabsError(f"prediction {prediction.id} ended {prediction.status!r}")
        self._ended(watch.key, prediction)
        if watch.input and not is_final(failure) and self.retries[watch.key] < self.config.item_retries:
            self.retries[watch.key] += 1
            self.log.warning("Item %s: %s; a new prediction is made", watch.key, failure)
            self.journal.record({"key": watch.key, "state": QUEUED, "id": watch.prediction_id})
            self.queue.append((watch.key, watch.input, None))
            return
        self._done(watch.key, {**_figures(prediction), **_failure(failure)})

    # --- outputs ------------------------------------------------------------------------------------

    async def _store(self, watch: Watch, prediction: api.Prediction) -> None:
        """Download, check and store the outputs now (their URLs expire); a storage failure is tried
        again, then recorded as paid but not stored, so a task retry stores it without buying."""
        from airflow_provider_eachlabs.outputs import store_outputs

        for attempt in range(self.config.item_retries + 1):
            try:
                stored = await self._io(
                    store_outputs,
                    prediction,
                    self._store_in,
                    name=watch.key,
                    fetch=self._fetch,
                    expected_format=self._expected_format(watch.input),
                    log=self.hook.log,
                )
            except EachlabsStorageError as error:
                if attempt < self.config.item_retries:
                    await asyncio.sleep(1.0 + attempt)
                    continue
                failure: dict[str, Any] = {**_failure(error), "prediction_status": SUCCESS}
                self._ended(watch.key, prediction)
                self._done(watch.key, {**_figures(prediction), **failure})
                return
            except EachlabsError as error:
                self._ended(watch.key, prediction)
                self._done(
                    watch.key, {**_figures(prediction), **_failure(error), "prediction_status": SUCCESS}
                )
                return
            self._ended(watch.key, prediction)  # just before its row: nothing can run in between
            staged = {"review": PENDING} if self.config.staging_path else {}
            self._done(watch.key, {**_figures(prediction), "status": SUCCESS, **_stored(stored), **staged})
            return

    @property
    def _store_in(self) -> str:
        """Where an output goes: ``output_path``, or with review the staging folder inside it."""
        staging = self.config.staging_path
        return staging.rstrip("/") + "/" if staging else self.config.output_path

    def _expected_format(self, input_: dict[str, Any]) -> str | None:
        """The image type the item asked for, when its model has a field for it."""
        field = self.config.format_field
        return str(input_[field]) if field and input_.get(field) else None

    def _fetch(self, url: str) -> bytes:
        return bytes(self.hook.download(url, self.config.max_output_bytes).content)

    def _ended(self, key: str, prediction: api.Prediction | None) -> None:
        """Count a prediction's end (``None``: the batch's deadline cancelled it) once the journal
        holds it; not when the journal's row already names it (an earlier run counted it)."""
        item = self.journal.state.items.get(key)
        watched = prediction.id if prediction is not None else self.watches[key].prediction_id
        if item is not None and item.row and item.row.get("prediction_id") == watched:
            return
        tags = self._tags
        if prediction is None:
            self._ends.append(functools.partial(metrics.timed_out, tags))
        else:
            self._ends.append(functools.partial(metrics.ended, prediction, tags))

    @property
    def _tags(self) -> dict[str, str] | None:
        """The metrics' tags: the task's, which the operator or the trigger gave the hook."""
        return getattr(self.hook, "metric_tags", None)

    def _done(self, key: str, row: dict[str, Any]) -> None:
        """The item's results row, with what its prediction was bought for when it names one: a clear
        after the journal is gone compares the items with it."""
        item = self.journal.state.items.get(key)
        if item is not None and row.get("prediction_id"):
            row = {**row, **item.purchase_row(self.task_instance)}
        self.journal.record({"key": key, "state": DONE, "row": {"key": key, **row}})
        self._results_dirty = True

    @property
    def task_instance(self) -> str:
        """The journal folder's name: a hash of the task instance, which its results rows carry."""
        return self.config.journal_path.rstrip("/").rsplit("/", 1)[-1]

    # --- the end --------------------------------------------------------------------------------------

    async def _time_out(self) -> None:
        """The deadline passed: cancel every prediction in flight; nothing more is created."""
        self.log.warning(
            "The batch's deadline passed: cancelling %d predictions in flight", len(self.watches)
        )
        for task in list(self._tasks):
            task.cancel()
        for watch in list(self.watches.values()):
            await self._io(self.cancel_quietly, watch.prediction_id)
            self._ended(watch.key, None)
            self._end_watch(watch)
            self._done(
                watch.key, {"prediction_id": watch.prediction_id, "status": "timeout", "error": "deadline"}
            )
        cancelled = len(self.rows())
        while self.queue:
            key, _, _ = self.queue.popleft()
            self._done(key, {"status": "not started", "error": "the batch's deadline passed first"})
        self._stopping = self._stopping or EachlabsBatchError(
            f"The batch did not finish before its deadline: {cancelled} items ended, the predictions in "
            f"flight were cancelled and the rest not started; see {self.config.results_path}. A retry "
            "keeps what was stored and does the rest."
        )

    def cancel_quietly(self, prediction_id: str) -> None:
        try:
            self.hook.cancel_prediction(prediction_id)
        except Exception as error:
            self.log.warning("Could not cancel prediction %s: %s", prediction_id, error)

    def in_flight_ids(self) -> list[str]:
        return [watch.prediction_id for watch in self.watches.values()]

    async def _write_journal(self) -> None:
        """Write what was recorded since the last write (taken here, on the loop, with a snapshot of
        the whole state when one is due), one write at a time."""
        async with self._write_lock:
            events = self.journal.take()
            ends, self._ends = self._ends, []
            snapshot = list(self.journal.state.events()) if self.journal.wants_snapshot else None
            if events or snapshot is not None:
                await self._io(self._write_then_count, events, snapshot, ends)
            else:
                _count(ends)

    def _write_then_count(
        self,
        events: list[dict[str, Any]],
        snapshot: list[dict[str, Any]] | None,
        ends: list[Callable[[], None]],
    ) -> None:
        """In the write's thread, so that a cancel of the batch after the write still counts."""
        self.journal.write(events, snapshot)
        _count(ends)

    def _log_progress(self, now: float) -> None:
        rows = self.rows()
        stored = sum(row.get("status") == SUCCESS for row in rows)
        total = self.config.total_items
        left = f"{total - len(rows)} to go" if total is not None else f"{len(self.queue)} queued"
        done_here = len(rows) - self._done_before
        eta = ""
        if total is not None and done_here > 0 and total > len(rows):
            seconds = (now - self.progress.started) / done_here * (total - len(rows))
            eta = f", about {seconds / 60:.0f} min left" if seconds >= 90 else f", about {seconds:.0f} s left"
        self.log.info(
            "Batch: %d of %s done (%d stored, %d failed), %d in flight, %s; $%.2f spent%s",
            len(rows),
            total if total is not None else "?",
            stored,
            len(rows) - stored,
            len(self.watches),
            left,
            sum(_cost(row) for row in rows),
            eta,
        )

    def rows(self) -> list[dict[str, Any]]:
        return [item.row for item in self.journal.state.items.values() if item.state == DONE and item.row]

    def summary(self) -> dict[str, Any]:
        summary = summarize(
            self.rows(), self.config.results_path, self.progress.creates, self.pacer.rate_limited
        )
        # For the task's spend ledger, which only the worker can write (``ledger.record_batch_try``).
        summary["spend_tally"] = asdict(self.journal.state.spend)
        return summary


async def wait_for_event(event: asyncio.Event, timeout: float) -> None:
    """Wait until the event is set or the timeout passes, whichever comes first.

    Not ``asyncio.wait_for``: on Python 3.10 and 3.11 it returns normally when a cancel arrives just
    as the event is set, so a batch the triggerer cancelled (the task marked failed, the trigger
    moved) would go on buying predictions. ``asyncio.wait`` never swallows the cancel."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()


def _count(ends: list[Callable[[], None]]) -> None:
    for count in ends:
        count()


def write_results(results_path: str, rows: list[dict[str, Any]]) -> None:
    """The results manifest: one JSON line per finished item, rewritten whole (atomically)."""
    content = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows).encode()
    write_atomically(results_path, content)


def summarize(
    rows: list[dict[str, Any]], results_path: str, creates: int, rate_limited: int
) -> dict[str, Any]:
    """The small XCom summary of a batch: counts, spend and predict-time percentiles."""
    statuses = Counter(str(row.get("status")) for row in rows)
    times = sorted(
        float(row["predict_time"]) for row in rows if isinstance(row.get("predict_time"), (int, float))
    )
    failed = [row for row in rows if row.get("status") not in (SUCCESS, INVALID, REJECTED)]
    return {
        "items": len(rows),
        "succeeded": statuses[SUCCESS],
        "failed": len(failed),
        "invalid": statuses[INVALID],
        "spend": round(sum(_cost(row) for row in rows), 4),
        "p50_predict_time": _percentile(times, 50),
        "p95_predict_time": _percentile(times, 95),
        "creates": creates,
        "rate_limited": rate_limited,
        "results_path": results_path,
        "first_failures": [{"key": row["key"], "error": row.get("error")} for row in failed[:5]],
        "all_failures_final": bool(failed) and all(row.get("final") for row in failed),
        # With review only (a batch without it has neither): outputs staged, and items rejected.
        **_review_counts(rows),
    }


def _review_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    staged = sum(row.get("status") == SUCCESS and row.get("review") == PENDING for row in rows)
    rejected = sum(row.get("status") == REJECTED for row in rows)
    return {
        **({"in_review": staged} if staged else {}),
        **({"rejected": rejected} if rejected else {}),
    }


def earlier_purchase(item: ItemState, max_tries: int | None) -> Earlier | None:
    """What an earlier try bought for the item and how it stands, as the journal says (the API is
    asked again: a kept item is re-read, a re-attached one watched); None when nothing was."""
    rejected = None
    row = item.row or {}
    if item.state == SENDING:
        prediction_id, status = LOST_CREATE, "sent"
    elif item.state == CREATED and item.prediction_id:
        prediction_id, status = item.prediction_id, "running"
    elif item.state == QUEUED and item.prediction_id:
        prediction_id, status = item.prediction_id, "failed"  # queued again after its failure
    elif item.state == DONE and row.get("prediction_id"):
        prediction_id, status = str(row["prediction_id"]), _earlier_status(row)
    else:
        return None
    if status == "failed" and row.get("final"):
        rejected = rejection(row.get("error_code"), str(row.get("error_code")))
    return Earlier(
        prediction_id=prediction_id,
        try_number=item.try_number,
        key=item.input_key,
        digests=item.digests,
        status=status,
        rejected=rejected,
        bought_fresh_this_run=fresh_this_run(item.fresh, item.max_tries, max_tries),
    )


def would_buy(item: ItemState | None, current: str, fresh: bool, max_tries: int | None) -> bool:
    """Whether the batch buys an item whose input has the key ``current`` anew, given what the journal
    holds for it: ``BatchRunner._resume``'s rule, for the estimate ``max_cost`` is checked against
    before anything is bought. A create an earlier try lost counts as bought (it may be sent again)."""
    if item is None or item.state == SENDING or (item.input_key is not None and item.input_key != current):
        return True
    earlier = earlier_purchase(item, max_tries)
    if earlier is None:
        return True
    return decide(earlier, current, item.digests or {}, fresh=fresh).choice is Choice.BUY


def _earlier_status(row: dict[str, Any]) -> str:
    """An ended item's prediction as its row tells it: success (stored or only paid for), failed or
    cancelled (a timeout cancelled it)."""
    if SUCCESS in (row.get("status"), row.get("prediction_status")):
        return SUCCESS
    return "cancelled" if row.get("status") in ("cancelled", "timeout") else "failed"


def _exists(path: Any) -> bool:
    """Whether a stored output is still there (a local path or an object-storage URI)."""
    if not isinstance(path, str) or not path:
        return False
    folder, _, name = path.rpartition("/")
    try:
        return Folder(folder or ".").exists(name)
    except Exception:  # the storage cannot say: stored again, which buys nothing
        return False


def _percentile(ordered: list[float], q: int) -> float | None:
    if not ordered:
        return None
    if len(ordered) == 1:
        return ordered[0]
    return round(float(statistics.quantiles(ordered, n=100, method="inclusive")[q - 1]), 3)


def _cost(row: dict[str, Any]) -> float:
    return api.non_negative_number(row.get("cost")) or 0.0


def _figures(prediction: api.Prediction) -> dict[str, Any]:
    metrics = prediction.metrics
    return {
        "prediction_id": prediction.id,
        "output_url": prediction.output_url,
        "cost": api.non_negative_number(metrics.get("cost")),
        "predict_time": api.non_negative_number(metrics.get("predict_time")),
    }


def _stored(stored: dict[str, Any]) -> dict[str, Any]:
    return {name: stored[name] for name in ("stored_path", "sha256", "bytes") if name in stored}


def _failure(error: EachlabsError) -> dict[str, Any]:
    status = "cancelled" if isinstance(error, PredictionCancelled) else "failed"
    return {
        "status": status,
        "error": str(error),
        "error_code": getattr(error, "error_code", None),
        "final": is_final(error),
    }
