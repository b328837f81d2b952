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
    from airflow.sdk import Connection

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

    :param eachlabs_conn_id: the connection; its password is the API key, its host the API base URL.
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

    def __repr__(self) -> str:
        return f"EachlabsHook(eachlabs_conn_id={self.eachlabs_conn_id!r})"

    # --- the connection -------------------------------------------------------------------------

    @property
    def settings(self) -> EachlabsSettings:
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
        """
        if self._settings is None:
            cache = _loop_settings.setdefault(asyncio.get_running_loop(), {})
            cached = cache.get(self.eachlabs_conn_id)
            if cached is None or time.monotonic() - cached[0] > SETTINGS_TTL_SECONDS:
                from airflow.providers.common.compat.connection import (
                    get_async_connection,
                    get_async_extra_dejson,
                )

                conn = await get_async_connection(self.eachlabs_conn_id, hook=self)
                extra = await get_async_extra_dejson(conn)
                cached = (time.monotonic(), EachlabsSettings.from_connection(conn, extra))
                cache[self.eachlabs_conn_id] = cached
            self._settings = cached[1]
        return self._settings

    @property
    def host(self) -> str:
        return self.settings.host

    # --- secrets --------------------------------------------------------------------------------

    def redact_also(self, secret: str | None) -> None:
        """Take ``secret`` (a webhook secret the API was sent) out of every answer, as the key is."""
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
        key and the secrets given to ``redact_also``."""
        return redact_json(value, self._known_secrets())

    def mask_secrets(self) -> None:
        """Register the key and the secrets given to ``redact_also`` with Airflow's log masker.

        Wherever a task resumes (``execute_complete``) it runs in a process that never read the
        connection before, and a failure event needs no request that would: without this, a secret
        logged there is shown as it is.
        """
        from airflow.sdk.log import mask_secret

        for secret in self._known_secrets():
            mask_secret(secret)

    async def amask_secrets(self) -> None:
        """``mask_secrets`` for a trigger, without blocking the event loop every trigger shares.

        Airflow 3.2 has no ``amask_secret``: its ``mask_secret`` tells the triggerer's supervisor
        through ``async_to_sync``, which works only off the event loop's thread, so it runs in one."""
        try:
            from airflow.sdk.log import amask_secret
        except ImportError:
            from airflow.sdk.log import mask_secret

            for secret in self._secrets(await self.aget_settings()):
                await asyncio.to_thread(mask_secret, secret)
            return
        for secret in self._secrets(await self.aget_settings()):
            await amask_secret(secret)

    def answer_at_once(self, timeout: float) -> None:
        """Send every request of this hook once, each within ``timeout`` seconds in total: for a
        person waiting on a page, where a retry's wait would hold a server thread for minutes."""
        settings = self.settings
        self._settings = dataclasses.replace(settings, max_retries=0, timeout=min(timeout, settings.timeout))

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call, sent once: the newest execution (the model route needs no key).

        Not retried: someone is waiting for the answer in the UI or the CLI, where the retries' log
        lines are not shown, and a host that is down should say so at once.
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

        ``retry_rate_limits`` False raises a 429 at once, for a caller that paces its own creates.
        """
        self.redact_also(webhook_secret)
        request = api.create_prediction_request(model, input, webhook_url, webhook_secret)
        prediction_id = self._call(request, api.read_created_prediction_id, rate_limits=retry_rate_limits)
        self.log.info("Created Eachlabs prediction %s for model %s", prediction_id, model)
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
        """The prediction now; with ``deadline`` (epoch seconds), no retry sleeps past it."""
        request = api.get_prediction_request(prediction_id)

        def read(response: ApiResponse) -> Prediction:
            return api.read_prediction(response, prediction_id)

        try:
            return self._call(request, read, deadline=deadline, counted=True)
        except EachlabsNotFoundError as error:
            raise _unknown_prediction(prediction_id, error) from None

    def cancel_prediction(self, prediction_id: str) -> None:
        """Ask the API to stop a prediction; best effort on its side."""
        self._call(api.cancel_prediction_request(prediction_id), api.read_json)
        self.log.info("Asked Eachlabs to cancel prediction %s", prediction_id)

    def get_model(self, slug: str) -> dict[str, Any]:
        """The model's description, including its ``request_schema``."""
        body = self._call(api.get_model_request(slug), api.read_json)
        if not isinstance(body, dict):
            raise api.EachlabsResponseError(f"the model answer for {slug!r} is not an object")
        return body

    def list_executions(self, limit: int = 20, offset: int = 0, model: str | None = None) -> dict[str, Any]:
        """One page of the account's executions, newest first."""
        body = self._call(api.list_executions_request(limit, offset, model), api.read_json)
        if not isinstance(body, dict):
            raise api.EachlabsResponseError("the executions answer is not an object")
        return body

    def upload_bytes(self, content: bytes, content_type: str) -> str:
        """Upload a file through a presigned URL and return the ``public_url`` to pass as input.

        The presigned URL comes from the API's answer, so it gets the download rules (public https,
        or the API host itself), the PUT follows no redirect, carries no key, and sends only the S3
        upload headers the answer asked for.
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

    def download(self, url: str, max_bytes: int = MAX_OUTPUT_BYTES) -> api.Download:
        """Fetch an output file, safely: it comes from the internet, chosen by someone else.

        Only public HTTPS URLs (or the API host's own files) are fetched, never with the key; every
        redirect is checked the same way before it is followed, the socket must reach a public
        address, the size is capped while reading (after decompression), and the answer must say it
        is an image.
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
        last look is at the deadline, never after it.
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
        request = api.get_prediction_request(prediction_id)

        def read(response: ApiResponse) -> Prediction:
            return api.read_prediction(response, prediction_id)

        try:
            return await self._acall(request, read, deadline=deadline, counted=True)
        except EachlabsNotFoundError as error:
            raise _unknown_prediction(prediction_id, error) from None

    async def acancel_prediction(self, prediction_id: str) -> None:
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
