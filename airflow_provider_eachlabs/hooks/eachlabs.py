"""EachlabsHook: the ``eachlabs`` connection, one method per API verb, sync and async.

What a request looks like and what an answer means is ``api``'s; how bytes travel is the
transports'; whether to send again is ``retrying``'s. The hook adds what needs all of them: a create
that is never paid twice, uploads and downloads that go only where the address rules allow, and the
wait for a prediction, whose deadline bounds every retry inside it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
import weakref
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseHook

from airflow_provider_eachlabs import api, retrying
from airflow_provider_eachlabs.addresses import is_api_host_url, is_public_https_url
from airflow_provider_eachlabs.api import ApiRequest, ApiResponse, HttpRequest, Prediction
from airflow_provider_eachlabs.exceptions import (
    EachlabsAPIError,
    EachlabsDownloadError,
    EachlabsError,
    EachlabsNotFoundError,
    EachlabsUnsafeAnswerError,
    PredictionTimeout,
)
from airflow_provider_eachlabs.polling import PollLoop, PollSchedule, expected_seconds_for
from airflow_provider_eachlabs.redaction import redact_json
from airflow_provider_eachlabs.settings import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
    MAX_OUTPUT_BYTES,
    PREDICTION_TIMEOUT,
    EachlabsSettings,
)

if TYPE_CHECKING:
    from datetime import datetime

    from airflow.sdk import Connection

    from airflow_provider_eachlabs.storage import FileSource

T = TypeVar("T")
MAX_REDIRECTS = 5
SETTINGS_TTL_SECONDS = 30.0
# Looking for a prediction an interrupted create made: how far back, and how many executions at most.
CLOCK_SKEW_SECONDS = 60.0
EXECUTIONS_SCAN_LIMIT = 500

# Each event loop's connection settings, by connection id, with when they were read.
_loop_settings: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, EachlabsSettings]]
] = weakref.WeakKeyDictionary()


class EachlabsHook(BaseHook):
    """Talks to the Eachlabs API with the key and host of an ``eachlabs`` connection.

    The operators are built on it, and it works as well on its own in a ``@task``: upload an image,
    create a prediction, wait for it, download what it made. Every request goes through one retry
    layer (429 always, 5xx and lost connections when sending again is harmless), bounded by the
    connection's ``max_retries`` and, in a wait, by the wait's deadline; a create that may have reached
    the server is never sent again blindly.

    Everything it raises is in ``airflow_provider_eachlabs.exceptions`` and says whether a retry can
    help (``is_final``). Final: ``EachlabsConfigError``, ``EachlabsInputError``, ``EachlabsAuthError``
    (401/403), ``EachlabsInvalidInputError`` (400/422), ``EachlabsPaymentRequiredError`` (402),
    ``EachlabsNotFoundError`` (404), ``EachlabsConflictError`` (409), ``EachlabsUnsafeAnswerError``,
    ``EachlabsDownloadError``. Not final (raised once the retry layer gave up):
    ``EachlabsRateLimitError`` (429), ``EachlabsServerError`` (5xx), ``EachlabsConnectionError``,
    ``EachlabsResponseError``, ``PredictionTimeout``. A connection id that does not exist raises
    Airflow's own ``AirflowNotFoundException`` on the first request.

    A task that wants the operators' behaviour for final errors (fail at once, no Airflow retries)
    wraps its calls in ``airflow_provider_eachlabs.failing.final_errors_fail_the_task()``.

    :param eachlabs_conn_id: the connection; its password is the API key, its host the API base URL.

    Example::

        hook = EachlabsHook()  # the eachlabs_default connection
        image_url = hook.upload_file("/data/scene.png")
        prediction_id = hook.create_prediction("flux-fill-pro", {"prompt": "...", "image": image_url})
        prediction = hook.wait_for_prediction(prediction_id, model="flux-fill-pro")
    """

    conn_name_attr = "eachlabs_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Eachlabs"

    def __init__(self, eachlabs_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eachlabs_conn_id = eachlabs_conn_id
        self._settings: EachlabsSettings | None = None
        # Status requests sent by this hook (retries included): a wait reports them when it ends.
        self.status_requests = 0
        # Secrets besides the key that the API was given and may repeat: a webhook secret.
        self._also_redacted: set[str] = set()
        # The tags (dag_id, task_id) of the task this hook works for, on the metrics it emits (429s).
        self.metric_tags: dict[str, str] | None = None
        # Predictions this hook bought for the task it runs in, and when: their ends go to its ledger.
        self._ledgered: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"EachlabsHook(eachlabs_conn_id={self.eachlabs_conn_id!r})"

    # --- the connection -------------------------------------------------------------------------

    @property
    def settings(self) -> EachlabsSettings:
        """The connection read once per hook: host, key and retry settings (``repr`` hides the key).

        Read lazily, at the first request and not when the hook is made, so that a hook built in a
        DAG file costs no connection lookup at parse time. The key is registered with Airflow's log
        masker here, for hooks used outside a task too.

        :return: an ``EachlabsSettings`` (``host``, ``api_key``, ``timeout``, ``max_retries``,
            ``backoff_initial``, ``backoff_max``).
        :raises EachlabsConfigError: (final) the connection has no key, a host that is not https (plain
            http only to a loopback host), or an extra that is not a number of the right kind.
        :raises AirflowNotFoundException: (Airflow's) no connection of that id.

        Example::

            EachlabsHook("eachlabs_staging").settings.timeout  # per-request timeout, seconds
        """
        if self._settings is None:
            from airflow.sdk.log import mask_secret

            conn: Connection = self.get_connection(self.eachlabs_conn_id)
            self._settings = EachlabsSettings.from_connection(conn, conn.extra_dejson)
            # Airflow masks passwords it hands to tasks; this covers hooks built outside a task too.
            mask_secret(self._settings.api_key)
        return self._settings

    async def aget_settings(self) -> EachlabsSettings:
        """The settings without a blocking DB or supervisor call inside the triggerer's event loop.

        A thousand triggers on one connection would otherwise look it up a thousand times, so the
        event loop keeps each connection's settings for ``SETTINGS_TTL_SECONDS`` (a rotated key is
        picked up after that). The lookup masks the password itself, asynchronously; a synchronous
        ``mask_secret`` here would block the loop that every trigger shares.

        :return: the same ``EachlabsSettings`` as ``settings``.
        :raises EachlabsConfigError: (final) as ``settings``.
        :raises AirflowNotFoundException: (Airflow's) no connection of that id.

        Example::

            settings = await EachlabsHook().aget_settings()  # in a trigger's run()
        """
        from airflow.sdk.exceptions import AirflowNotFoundException

        if self._settings is None:
            cache = _loop_settings.setdefault(asyncio.get_running_loop(), {})
            cached = cache.get(self.eachlabs_conn_id)
            if cached is None or time.monotonic() - cached[0] > SETTINGS_TTL_SECONDS:
                from airflow.providers.common.compat.connection import (
                    get_async_connection,
                    get_async_extra_dejson,
                )

                try:
                    conn = await get_async_connection(self.eachlabs_conn_id, hook=self)
                except AirflowNotFoundException:
                    # `airflow dags test` runs the trigger in its own process, where the asynchronous
                    # lookup reaches only environment variables and secrets backends; the
                    # synchronous one, off the loop, also reaches a connection made in the UI.
                    from asgiref.sync import sync_to_async

                    conn = await sync_to_async(self.get_connection)(self.eachlabs_conn_id)
                extra = await get_async_extra_dejson(conn)
                cached = (time.monotonic(), EachlabsSettings.from_connection(conn, extra))
                cache[self.eachlabs_conn_id] = cached
            self._settings = cached[1]
        return self._settings

    @property
    def host(self) -> str:
        """The API base URL requests go to (``https://api.eachlabs.ai`` unless the connection says).

        The address rules compare URLs with it: an input URL, an upload or a download on the API
        host itself is allowed even when that host is not public (the simulator on loopback).

        :return: the base URL, without a trailing slash.
        :raises EachlabsConfigError: (final) as ``settings``.

        Example::

            EachlabsHook().host  # 'https://api.eachlabs.ai'
        """
        return self.settings.host

    # --- secrets --------------------------------------------------------------------------------

    def redact_also(self, secret: str | None) -> None:
        """Take ``secret`` (a webhook secret the API was sent) out of every answer, as the key is.

        An API that repeats what it was sent (in an error's details, say) would otherwise put the
        secret into exception text, logs and XCom. ``create_prediction`` calls it for its
        ``webhook_secret``; call it for any other secret you send in an input.

        :param secret: the secret; ``None`` or empty does nothing.
        :return: nothing. Raises nothing.

        Example::

            hook.redact_also(Variable.get("partner_token"))
        """
        if secret:
            self._also_redacted.add(str(secret))

    def _secrets(self, settings: EachlabsSettings) -> tuple[str, ...]:
        return (settings.api_key, *sorted(self._also_redacted))

    def _known_secrets(self) -> tuple[str, ...]:
        """``_secrets`` for a task that resumes: without the key when this process cannot read the
        connection, so that the event's own error is the one reported (the trigger already took the
        key out of it; any request would raise the connection's error anyway)."""
        try:
            settings = self.settings
        except Exception:
            return tuple(sorted(self._also_redacted))
        return self._secrets(settings)

    def redact(self, value: Any) -> Any:
        """``value`` (a trigger event: what the API said, carried through the triggerer) without the
        key and the secrets given to ``redact_also``.

        :param value: JSON-like data: strings, numbers, lists and dicts, nested.
        :return: a copy with every form of each secret replaced by ``***``. Raises nothing: a
            connection that cannot be read here leaves the key out of the secrets looked for (the
            trigger already took it out).

        Example::

            event = hook.redact(event)  # in execute_complete, before logging or raising
        """
        return redact_json(value, self._known_secrets())

    def mask_secrets(self) -> None:
        """Register the key and the secrets given to ``redact_also`` with Airflow's log masker.

        Wherever a task resumes (``execute_complete``) it runs in a process that never read the
        connection before, and a failure event needs no request that would: without this, a secret
        logged there is shown as it is.

        :return: nothing. Raises nothing: an unreadable connection leaves only the key unregistered.

        Example::

            hook.mask_secrets()  # first thing in execute_complete
        """
        from airflow.sdk.log import mask_secret

        for secret in self._known_secrets():
            mask_secret(secret)

    async def amask_secrets(self) -> None:
        """``mask_secrets`` for a trigger, without blocking the event loop every trigger shares.

        Airflow 3.2 has no ``amask_secret``: its ``mask_secret`` tells the triggerer's supervisor
        through ``async_to_sync``, which works only off the event loop's thread, so it runs in one.

        :return: nothing.
        :raises EachlabsConfigError: (final) as ``settings``: a trigger reads the connection to know
            the key.

        Example::

            await hook.amask_secrets()  # first thing in a trigger's run()
        """
        try:
            from airflow.sdk.log import amask_secret
        except ImportError:
            from airflow.sdk.log import mask_secret
            from asgiref.sync import sync_to_async

            for secret in self._secrets(await self.aget_settings()):
                # asgiref's thread, not asyncio's: its async_to_sync then finds this loop for the
                # supervisor message instead of starting another one that waits for it forever.
                await sync_to_async(mask_secret)(secret)
            return
        for secret in self._secrets(await self.aget_settings()):
            await amask_secret(secret)

    def answer_at_once(self, timeout: float) -> None:
        """Send every request of this hook once, each within ``timeout`` seconds in total: for a
        person waiting on a page, where a retry's wait would hold a server thread for minutes.

        :param timeout: seconds per request, at most the connection's own ``timeout``.
        :return: nothing; later calls of this hook raise their first error instead of retrying.
        :raises EachlabsConfigError: (final) as ``settings``.

        Example::

            hook.answer_at_once(5)
            prediction = hook.get_prediction(prediction_id)  # one GET, 5 s at most
        """
        settings = self.settings
        self._settings = dataclasses.replace(settings, max_retries=0, timeout=min(timeout, settings.timeout))

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call, sent once: the newest execution (the model route needs no key).

        Not retried: someone is waiting for the answer in the UI or the CLI, where the retries' log
        lines are not shown, and a host that is down should say so at once.

        :return: ``(True, "Connected to Eachlabs at <host>")``, or ``(False, <the error's message>)``
            (the key never in it). Raises nothing: the UI's Test button shows the message.

        Example::

            ok, message = EachlabsHook().test_connection()
        """
        try:
            settings = self.settings
            self._settings = dataclasses.replace(settings, max_retries=0)
            self.list_executions(limit=1)
        except Exception as error:
            return False, str(error)
        finally:
            self._settings = None
        return True, f"Connected to Eachlabs at {settings.host}"

    # --- the spend ledger of a task that uses the hook itself -------------------------------------

    def _ledger_purchase(self, prediction_id: str, model: str, how: str) -> None:
        """Record a prediction bought from a task's own code (a ``@task`` using the hook) in that
        task's spend ledger and metrics, as the operators record theirs; not for the provider's
        operators, which record with more (the try, the re-run rule), nor outside a task."""
        context = _task_context()
        if context is None or getattr(context.get("task"), "records_its_purchases", False):
            return
        from airflow_provider_eachlabs import ledger, metrics

        now = time.time()
        if how == "bought":
            metrics.bought(metrics.task_tags(context.get("ti")))
        ledger.record_bought(context, prediction_id, model, how, now, self.eachlabs_conn_id)
        self._ledgered[prediction_id] = now

    def _ledger_end(self, prediction: Prediction) -> None:
        """The end of a prediction ``_ledger_purchase`` recorded, once, with the API's cost."""
        bought_at = self._ledgered.pop(prediction.id, None)
        context = _task_context() if bought_at is not None else None
        if context is not None:
            from airflow_provider_eachlabs import ledger, metrics

            metrics.ended(prediction, metrics.task_tags(context.get("ti")))
            ledger.record_ended(context, prediction, bought_at, self.eachlabs_conn_id)

    # --- the API, one method per verb -----------------------------------------------------------

    def create_prediction(
        self,
        model: str,
        input: Mapping[str, Any],
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        *,
        retry_rate_limits: bool = True,
    ) -> str:
        """Start a prediction and return its id. Never re-sent once it may have reached the server.

        A create buys a prediction, so only what provably made nothing is sent again: a 429, or a
        connection that never opened. After a 5xx, a dropped connection or an unreadable answer the
        prediction may exist: the error is raised (``api.create_outcome_unknown(error)`` says so),
        and ``submit_prediction`` is the call that looks for it instead. The input is not checked
        here (the operators check flux-fill-pro's fields first); the API's refusal comes back as
        ``EachlabsInvalidInputError``. Each call buys one more prediction: a task retry that calls it
        again pays again (the operators re-attach to the first one instead).

        :param model: the model's slug, such as ``"flux-fill-pro"``.
        :param input: the model's input; file inputs are URLs (see ``upload_file``).
        :param webhook_url: where the API posts the finished prediction, if anywhere.
        :param webhook_secret: sent with the webhook; taken out of every answer (``redact_also``).
        :param retry_rate_limits: False raises a 429 at once, for a caller that paces its own creates.
        :return: the prediction id, a safe token.
        :raises EachlabsInvalidInputError: (final) 400/422: the API refused the input.
        :raises EachlabsAuthError: (final) 401/403: a missing, wrong or unauthorised key.
        :raises EachlabsPaymentRequiredError: (final) 402: the balance is too low.
        :raises EachlabsNotFoundError: (final) 404: no such model.
        :raises EachlabsUnsafeAnswerError: (final) a redirect, or an id that is not a safe token.
        :raises EachlabsConfigError: (final) as ``settings``.
        :raises EachlabsRateLimitError: (not final) 429 past the retries; nothing was created.
        :raises EachlabsServerError: (not final) 5xx; the prediction may exist.
        :raises EachlabsConnectionError: (not final) no answer; ``request_sent`` says whether it may
            exist.
        :raises EachlabsResponseError: (not final) an unreadable 2xx; the prediction exists.

        Example::

            prediction_id = hook.create_prediction(
                "flux-fill-pro", {"prompt": "an empty meadow", "image": image_url, "mask": mask_url}
            )
        """
        self.redact_also(webhook_secret)
        request = api.create_prediction_request(model, input, webhook_url, webhook_secret)
        prediction_id = self._call(request, api.read_created_prediction_id, rate_limits=retry_rate_limits)
        self.log.info("Created Eachlabs prediction %s for model %s", prediction_id, model)
        self._ledger_purchase(prediction_id, model, "bought")
        return prediction_id

    def submit_prediction(
        self,
        model: str,
        input: Mapping[str, Any],
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        *,
        since: float | None = None,
        exclude: Collection[str] = (),
        retry_rate_limits: bool = True,
    ) -> str:
        """Create a prediction exactly once, even when the network loses the answer.

        When a create fails in a way that may have left a prediction behind (a 5xx, a dropped
        connection, a read timeout, an unreadable 2xx), the account's executions are searched for it
        before anything is sent again: a prediction of the same model with the same input, created
        since ``since`` (default: this call) and not in ``exclude``. Only when none turns up within
        one request timeout is the create sent again, up to the connection's retry count. A 429 made
        nothing; with ``retry_rate_limits`` False it is raised at once, for the caller's pacer.

        :param model: as ``create_prediction``.
        :param input: as ``create_prediction``.
        :param webhook_url: as ``create_prediction``.
        :param webhook_secret: as ``create_prediction``.
        :param since: epoch seconds; a prediction found must be at least this recent.
        :param exclude: prediction ids that are not the one looked for (bought for something else).
        :param retry_rate_limits: as ``create_prediction``.
        :return: the id of the one prediction this call made.
        :raises: what ``create_prediction`` raises, but that a lost create is looked for before the
            error is raised; the last attempt's error once the connection's ``max_retries`` are spent.
            The executions lookup raises what ``list_executions`` raises.

        Example::

            prediction_id = hook.submit_prediction("flux-fill-pro", fill_input)
        """
        since = time.time() if since is None else since
        for attempt in range(self.settings.max_retries + 1):
            try:
                return self.create_prediction(
                    model, input, webhook_url, webhook_secret, retry_rate_limits=retry_rate_limits
                )
            except EachlabsAPIError as error:
                if not api.create_outcome_unknown(error) or attempt == self.settings.max_retries:
                    raise
                self.log.warning("The create may have gone through (%s); looking for its prediction", error)
            found = self.find_prediction(
                model, input, since=since, exclude=exclude, patience=self.settings.timeout
            )
            if found is not None:
                self.log.info("Found prediction %s that the interrupted create made: using it", found)
                self._ledger_purchase(found, model, "found")
                return found
            self.log.warning("No prediction was made by the interrupted create: sending it again")
        raise AssertionError("the loop returns or raises")

    def find_prediction(
        self,
        model: str,
        input: Mapping[str, Any],
        *,
        since: float,
        exclude: Collection[str] = (),
        patience: float = 0.0,
    ) -> str | None:
        """The newest prediction of ``model`` made from ``input``, created since ``since``.

        ``GET /v1/executions`` lists executions without their input, so each recent candidate is
        fetched to compare. The listing may lag the create, so it is read again for ``patience``
        seconds before the answer is "none". Clock skew between here and the API is allowed for by
        looking a minute further back; the input comparison keeps that safe.

        :param model: the model's slug.
        :param input: the input sent; a candidate matches when each of these fields is unchanged in
            its input (the API may add defaults).
        :param since: epoch seconds the create was sent at (or before).
        :param exclude: ids that must not be returned.
        :param patience: seconds to keep reading the listing while it shows no match.
        :return: the prediction id, or ``None`` when none matches. Sends only GETs.
        :raises EachlabsAuthError: (final) a wrong key.
        :raises EachlabsUnsafeAnswerError: (final) a listed id that is not a safe token.
        :raises EachlabsServerError, EachlabsConnectionError, EachlabsResponseError: (not final) past
            the retries.

        Example::

            found = hook.find_prediction("flux-fill-pro", fill_input, since=sent_at, patience=10)
        """
        earliest = since - CLOCK_SKEW_SECONDS
        give_up_at = time.monotonic() + patience
        while True:
            for execution_id in self._recent_execution_ids(model, earliest):
                if execution_id in exclude:
                    continue
                candidate = self._call(api.get_prediction_request(execution_id), api.read_json)
                if _sent_input_matches(input, candidate):
                    return execution_id
            if time.monotonic() >= give_up_at:
                return None
            time.sleep(min(1.0, max(0.1, patience / 4)))

    def _recent_execution_ids(self, model: str, earliest: float) -> list[str]:
        """Ids of the model's executions created at or after ``earliest``, newest first."""
        ids: list[str] = []
        for offset in range(0, EXECUTIONS_SCAN_LIMIT, 100):
            page = self.list_executions(limit=100, offset=offset, model=model)
            rows = page.get("executions")
            rows = rows if isinstance(rows, list) else []
            for row in rows:
                if not isinstance(row, Mapping):
                    continue
                created = api.parse_timestamp(row.get("created_at"))
                if created is not None and created < earliest:
                    return ids
                ids.append(api.check_prediction_id(row.get("id")))
            if len(rows) < 100:
                break
        return ids

    def get_prediction(self, prediction_id: str, *, deadline: float | None = None) -> Prediction:
        """The prediction now; with ``deadline`` (epoch seconds), no retry sleeps past it.

        One look, for a caller that keeps its own schedule; ``wait_for_prediction`` is the loop.

        :param prediction_id: the id ``create_prediction`` returned.
        :param deadline: epoch seconds after which no retry of a failing GET starts.
        :return: a ``Prediction``: ``status`` (``.succeeded``, ``.failed``, ``.cancelled``,
            ``.is_terminal``), ``output``, ``output_url`` / ``output_urls``, ``metrics``, ``cost``,
            ``error_text``.
        :raises EachlabsNotFoundError: (final) no such prediction for this key (a wrong key or id).
        :raises EachlabsUnsafeAnswerError: (final) ``prediction_id`` is not a safe token, or a redirect.
        :raises EachlabsAuthError: (final) a wrong key.
        :raises EachlabsServerError, EachlabsConnectionError, EachlabsResponseError: (not final) past
            the retries (or the deadline).

        Example::

            if hook.get_prediction(prediction_id).succeeded: ...
        """
        request = api.get_prediction_request(prediction_id)

        def read(response: ApiResponse) -> Prediction:
            return api.read_prediction(response, prediction_id)

        try:
            return self._call(request, read, deadline=deadline, counted=True)
        except EachlabsNotFoundError as error:
            raise _unknown_prediction(prediction_id, error) from None

    def cancel_prediction(self, prediction_id: str) -> None:
        """Ask the API to stop a prediction; best effort on its side.

        ``wait_for_prediction`` does not cancel when it times out (the operators do): a task that
        gives up on a prediction cancels it here, so it does not run on unwatched.

        :param prediction_id: the id to cancel.
        :return: nothing; a later ``get_prediction`` shows ``cancelled`` once the API stopped it.
        :raises EachlabsConflictError: (final) 409: the prediction already ended.
        :raises EachlabsNotFoundError: (final) no such prediction for this key.
        :raises EachlabsUnsafeAnswerError: (final) ``prediction_id`` is not a safe token.
        :raises EachlabsServerError, EachlabsConnectionError: (not final) past the retries.

        Example::

            try:
                prediction = hook.wait_for_prediction(prediction_id, timeout=600)
            except PredictionTimeout:
                hook.cancel_prediction(prediction_id)
                raise
        """
        self._call(api.cancel_prediction_request(prediction_id), api.read_json)
        self.log.info("Asked Eachlabs to cancel prediction %s", prediction_id)

    def get_model(self, slug: str) -> dict[str, Any]:
        """The model's description, including its ``request_schema``.

        What ``EachlabsPredictionOperator`` checks a generic model's input against before buying.

        :param slug: the model's slug.
        :return: the API's model object (``request_schema``: a JSON schema of the input).
        :raises EachlabsNotFoundError: (final) no such model.
        :raises EachlabsResponseError: (not final) the answer is not a JSON object.
        :raises EachlabsServerError, EachlabsConnectionError: (not final) past the retries.

        Example::

            steps = hook.get_model("flux-fill-pro")["request_schema"]["properties"]["steps"]
        """
        body = self._call(api.get_model_request(slug), api.read_json)
        if not isinstance(body, dict):
            raise api.EachlabsResponseError(f"the model answer for {slug!r} is not an object")
        return body

    def list_executions(
        self,
        limit: int = 20,
        offset: int = 0,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, Any]:
        """One page of the account's executions, newest first.

        :param limit: rows per page (the API takes 1 to 100).
        :param offset: rows to skip.
        :param model: only this model's executions.
        :param since: only executions created at or after this moment, sent as ``from`` (RFC 3339,
            UTC; a naive datetime is read as UTC). Without it the API's window is the 90 days before
            ``until`` (or before now).
        :param until: only executions created at or before this moment, sent as ``to``.
        :return: the API's page: ``executions``, a list of rows (``id``, ``status``, ``created_at``,
            ``execution_cost``, ...), without their input; ``total_count`` (a lower bound when
            ``total_capped``). Page on until a page has fewer than ``limit`` rows.
        :raises EachlabsAuthError: (final) a wrong key.
        :raises EachlabsInvalidInputError: (final) a limit, offset or window the API refuses.
        :raises EachlabsResponseError: (not final) the answer is not a JSON object.
        :raises EachlabsServerError, EachlabsConnectionError: (not final) past the retries.

        Example::

            latest = hook.list_executions(limit=5, model="flux-fill-pro")["executions"]
            june = hook.list_executions(
                limit=100,
                since=datetime(2026, 6, 1, tzinfo=timezone.utc),
                until=datetime(2026, 7, 1, tzinfo=timezone.utc),
            )
        """
        body = self._call(api.list_executions_request(limit, offset, model, since, until), api.read_json)
        if not isinstance(body, dict):
            raise api.EachlabsResponseError("the executions answer is not an object")
        return body

    def upload_bytes(self, content: bytes, content_type: str) -> str:
        """Upload a file through a presigned URL and return the ``public_url`` to pass as input.

        The presigned URL comes from the API's answer, so it gets the download rules (public https,
        or the API host itself), the PUT follows no redirect, carries no key, and sends only the S3
        upload headers the answer asked for. The bytes are not checked: ``upload_file`` is the call
        that reads a file and refuses what is not an image.

        :param content: the file's bytes.
        :param content_type: its MIME type, such as ``"image/png"``.
        :return: the public URL of the uploaded file.
        :raises EachlabsUnsafeAnswerError: (final) a presigned URL that is not public https (nor on
            the API host), or a redirect.
        :raises EachlabsDownloadError: (final) the presigned host resolves to a private address.
        :raises EachlabsAuthError: (final) a wrong key.
        :raises EachlabsServerError, EachlabsConnectionError, EachlabsResponseError: (not final) past
            the retries (the presign and the PUT may both be sent again).

        Example::

            url = hook.upload_bytes(png_bytes, "image/png")
        """
        target = self._call(
            api.presign_upload_request(content_type),
            lambda response: api.read_presigned_upload(api.read_json(response)),
        )
        if target.dropped_headers:
            self.log.warning(
                "The presign answer asked for headers that no S3 upload needs; not sent: %s",
                ", ".join(target.dropped_headers),
            )
        on_api_host = is_api_host_url(target.presigned_url, self.settings.host)
        if not (on_api_host or is_public_https_url(target.presigned_url)):
            raise EachlabsUnsafeAnswerError(
                f"refusing to upload to {target.presigned_url[:200]}: presigned URLs must be public "
                "https:// URLs (or on the API host itself)"
            )
        put = HttpRequest(
            "PUT",
            target.presigned_url,
            headers={"Content-Type": content_type, "User-Agent": api.USER_AGENT, **target.required_headers},
            content=content,
            public_only=not on_api_host,
        )
        self._send(put, True, api.raise_for_status)
        return target.public_url

    def upload_file(self, source: FileSource, *, field: str = "source") -> str:
        """Upload an image file and return the public URL to pass as a model's input.

        The file is read and recognised as the operators read theirs (``storage.load_image``): its
        type comes from its bytes, never its name, so a text file called ``scene.png`` is refused
        here, before any request, instead of reaching the model as an image it cannot read.

        :param source: a local path (``str`` or ``Path``), a ``file://`` URI, an object-storage URI
            (``s3://``, ``gs://``, ``memory://``, ... through ``ObjectStoragePath``), or an
            ``ObjectStoragePath``, read with its own connection and storage options.
        :param field: the name the error gives the file (``image``, ``mask``, ...).
        :return: the public URL of the uploaded image.
        :raises EachlabsInputError: (final) no file at ``source``, a folder, an unreadable file, or
            bytes that are not a JPEG, PNG or WebP image; nothing was sent.
        :raises: what ``upload_bytes`` raises.

        Example::

            image_url = hook.upload_file("/data/scene.png")
            mask_url = hook.upload_file("s3://aws_default@bucket/masks/scene.png", field="mask")
        """
        from airflow_provider_eachlabs.storage import load_image, upload_image

        return upload_image(self.upload_bytes, load_image(field, source), {}, self.log)

    def download(self, url: str, max_bytes: int = MAX_OUTPUT_BYTES) -> api.Download:
        """Fetch an output file, safely: it comes from the internet, chosen by someone else.

        Only public HTTPS URLs (or the API host's own files) are fetched, never with the key; every
        redirect is checked the same way before it is followed, the socket must reach a public
        address, the size is capped while reading (after decompression), and the answer must say it
        is an image. Output URLs expire: download as soon as the prediction succeeds.

        :param url: an output URL (``Prediction.output_url``) or an uploaded file's public URL.
        :param max_bytes: the size cap, 50 MB by default.
        :return: an ``api.Download``: ``content`` (bytes), ``content_type``, ``url``. The bytes are
            not checked further; ``storage.check_output`` is the operators' check that they are a
            whole image.
        :raises EachlabsDownloadError: (final) an address the rules refuse (not https, a private
            host), a redirect there or past 5 hops, or a file beyond ``max_bytes``.
        :raises EachlabsNotFoundError: (final) 404: the URL expired or never existed.
        :raises EachlabsResponseError: (not final) an answer that is not an image, past the retries.
        :raises EachlabsServerError, EachlabsConnectionError: (not final) past the retries.

        Example::

            download = hook.download(prediction.output_url)
            Path("out.png").write_bytes(download.content)
        """
        from urllib.parse import urljoin

        for _ in range(MAX_REDIRECTS + 1):
            on_api_host = is_api_host_url(url, self.settings.host)
            if not (on_api_host or is_public_https_url(url)):
                raise EachlabsDownloadError(
                    f"refusing to download {url[:200]}: outputs are fetched only over https:// from "
                    "public hosts (or from the API host itself)"
                )
            request = HttpRequest(
                "GET",
                url,
                headers={"User-Agent": api.USER_AGENT, "Accept": "image/*"},
                max_bytes=max_bytes,
                oversize_error=EachlabsDownloadError,
                public_only=not on_api_host,
            )
            fetched = self._send(
                request, True, functools.partial(api.read_download, url=url), image_answer=True
            )
            if isinstance(fetched, api.Download):
                return fetched
            url = urljoin(url, fetched)
        raise EachlabsDownloadError(f"output {url[:200]} redirects more than {MAX_REDIRECTS} times")

    def wait_for_prediction(
        self,
        prediction_id: str,
        poll_interval: float | None = None,
        timeout: float = PREDICTION_TIMEOUT.total_seconds(),
        *,
        model: str | None = None,
        started_at: float | None = None,
    ) -> Prediction:
        """Poll until the prediction ends; ``PredictionTimeout`` once ``timeout`` seconds have passed.

        The deadline bounds everything inside the wait, retries of a failing status request too: the
        last look is at the deadline, never after it. It holds the worker slot while it waits (the
        operators' deferrable mode does not); polls come often at first, then further apart.

        A failed or cancelled prediction is returned, not raised: the caller decides.
        ``api.raise_for_prediction_end(prediction)`` raises what the operators raise
        (``PredictionFailed``, final when a retry cannot help; ``PredictionCancelled``, final).

        :param prediction_id: the id to wait for.
        :param poll_interval: fixed seconds between looks; ``None`` adapts to the model.
        :param timeout: seconds from ``started_at`` after which the wait stops (an hour by default).
        :param model: the slug, for the adaptive schedule (flux-fill-pro's first look comes 8 s in,
            a second before the model page's estimate).
        :param started_at: epoch seconds the wait counts from (default now), for a retry that resumes.
        :return: the ``Prediction`` in a terminal status: succeeded, failed or cancelled.
        :raises PredictionTimeout: (not final) ``timeout`` passed; the prediction was *not* cancelled
            (``cancel_prediction`` does that).
        :raises EachlabsNotFoundError: (final) no such prediction for this key.
        :raises EachlabsAuthError, EachlabsUnsafeAnswerError: (final) as ``get_prediction``.
        :raises EachlabsServerError, EachlabsConnectionError, EachlabsResponseError: (not final) a
            status request that failed past its retries before the deadline.

        Example::

            prediction = hook.wait_for_prediction(prediction_id, timeout=600, model="flux-fill-pro")
            api.raise_for_prediction_end(prediction)
        """
        started = started_at if started_at is not None else time.time()
        loop = PollLoop(
            prediction_id,
            started_at=started,
            deadline=started + timeout,
            schedule=PollSchedule(poll_interval, expected_seconds_for(model)),
        )
        time.sleep(loop.first_wait(time.time()))
        while True:
            try:
                prediction = self.get_prediction(prediction_id, deadline=loop.deadline)
                step = loop.on_prediction(prediction, time.time())
            except EachlabsError as error:
                step = loop.on_error(error, time.time())
            if step.note:
                self.log.info(step.note)
            if step.done is not None:
                self._ledger_end(step.done)
                return step.done
            if step.timed_out:
                waited = time.time() - started
                self.log.info(
                    "Stopped waiting for prediction %s after %.1fs and %d status requests",
                    prediction_id,
                    waited,
                    self.status_requests,
                )
                raise PredictionTimeout(prediction_id, waited, loop.last_status)
            time.sleep(step.wait)

    # --- async counterparts for the triggerer -----------------------------------------------------

    async def aget_prediction(self, prediction_id: str, *, deadline: float | None = None) -> Prediction:
        """``get_prediction`` on the event loop, for triggers: same arguments, answer and errors.

        It shares the loop's one aiohttp session (10 sockets), so thousands of waits in one triggerer
        do not open thousands of connections.

        Example::

            prediction = await EachlabsHook().aget_prediction(prediction_id)
        """
        request = api.get_prediction_request(prediction_id)

        def read(response: ApiResponse) -> Prediction:
            return api.read_prediction(response, prediction_id)

        try:
            return await self._acall(request, read, deadline=deadline, counted=True)
        except EachlabsNotFoundError as error:
            raise _unknown_prediction(prediction_id, error) from None

    async def acancel_prediction(self, prediction_id: str) -> None:
        """``cancel_prediction`` on the event loop, for a trigger's ``on_kill``: same errors.

        Example::

            await EachlabsHook().acancel_prediction(prediction_id)
        """
        await self._acall(api.cancel_prediction_request(prediction_id), api.read_json)

    # --- sending, with the one retry layer --------------------------------------------------------

    def _call(
        self,
        request: ApiRequest,
        read: Callable[[ApiResponse], T],
        *,
        deadline: float | None = None,
        counted: bool = False,
        rate_limits: bool = True,
    ) -> T:
        """Send an API request and read its answer, retrying as the request and the error allow.

        Reading happens inside the retry, so an unreadable answer to a GET is asked for again.
        """
        http_request = request.to_http(self.settings)
        return self._send(http_request, request.resendable, read, deadline, counted, rate_limits)

    def _send(
        self,
        request: HttpRequest,
        resendable: bool,
        read: Callable[[ApiResponse], T],
        deadline: float | None = None,
        counted: bool = False,
        rate_limits: bool = True,
        *,
        image_answer: bool = False,
    ) -> T:
        """Send with the retry layer. Every answer is redacted of the secrets before ``read`` sees it
        (but for the bytes of an ``image_answer`` that succeeded)."""
        from airflow_provider_eachlabs.transport import sync

        settings = self.settings

        def attempt() -> T:
            self.status_requests += counted
            answer = sync.send(request, settings)
            return read(answer.redacted(self._secrets(settings), keep_success_body=image_answer))

        return retrying.call_with_retries(
            attempt,
            settings,
            resendable=resendable,
            log=self.log,
            deadline=deadline,
            rate_limits=rate_limits,
            metric_tags=self.metric_tags,
        )

    async def _acall(
        self,
        request: ApiRequest,
        read: Callable[[ApiResponse], T],
        *,
        deadline: float | None = None,
        counted: bool = False,
    ) -> T:
        """``_call`` for the triggerer, on the event loop's shared session."""
        from airflow_provider_eachlabs.transport import aio

        settings = await self.aget_settings()
        http_request = request.to_http(settings)

        async def attempt() -> T:
            self.status_requests += counted
            answer = await aio.send(http_request, settings)
            return read(answer.redacted(self._secrets(settings)))

        result: T = await retrying.acall_with_retries(
            attempt,
            settings,
            resendable=request.resendable,
            log=self.log,
            deadline=deadline,
            metric_tags=self.metric_tags,
        )
        return result


def _task_context() -> Any:
    """The running task's context, or None outside a task (the api-server, a script)."""
    try:
        from airflow.sdk import get_current_context

        return get_current_context()
    except Exception:
        return None


def _unknown_prediction(prediction_id: str, error: EachlabsNotFoundError) -> EachlabsNotFoundError:
    """A 404 that names the prediction looked for: predictions are per account, so a wrong key or a
    template that pulled the wrong id both end here."""
    return EachlabsNotFoundError(
        f"no prediction {prediction_id!r} for this API key ({error.message})",
        status_code=error.status_code,
        details=error.details,
        request_id=error.request_id,
    )


def _sent_input_matches(sent: Mapping[str, Any], candidate: Any) -> bool:
    """Every field this provider sent is in the candidate's input, unchanged (the API may add defaults)."""
    received = candidate.get("input") if isinstance(candidate, Mapping) else None
    return isinstance(received, Mapping) and all(received.get(k) == v for k, v in sent.items())


# ``EachlabsSettings`` moved to ``settings``; it stays importable from here.
__all__ = ["EachlabsHook", "EachlabsSettings"]
