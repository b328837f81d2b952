"""EachlabsHook: the ``eachlabs`` connection, one method per API verb, sync and async.

What a request looks like and what an answer means is ``api``'s; how bytes travel (requests on
workers, aiohttp in the triggerer) and the retry policy are ``transport``'s. The hook adds what needs
both: a create that is never paid twice, a safe download, and the wait for a prediction.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseHook

from airflow_provider_eachlabs import api, transport
from airflow_provider_eachlabs.api import ApiRequest, ApiResponse, Prediction
from airflow_provider_eachlabs.inputs import is_api_host_url, is_public_https_url
from airflow_provider_eachlabs.polling import PollLoop, PollSchedule, expected_seconds_for

if TYPE_CHECKING:
    import requests
    from airflow.sdk import Connection

T = TypeVar("T")
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_BACKOFF_INITIAL = 1.0
DEFAULT_BACKOFF_MAX = 60.0
DEFAULT_MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
MAX_REDIRECTS = 5
SETTINGS_TTL_SECONDS = 30.0
# Looking for a prediction an interrupted create made: how far back, and how many executions at most.
CLOCK_SKEW_SECONDS = 60.0
EXECUTIONS_SCAN_LIMIT = 500


# Each event loop's connection settings, by connection id, with when they were read.
_loop_settings: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, EachlabsSettings]]
] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class EachlabsSettings:
    """What the connection says, read once; ``repr`` leaves the key out."""

    host: str
    api_key: str
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL
    backoff_max: float = DEFAULT_BACKOFF_MAX

    def __repr__(self) -> str:
        return f"EachlabsSettings(host={self.host!r}, api_key=***, timeout={self.timeout})"

    @classmethod
    def from_connection(cls, conn: Connection, extra: Mapping[str, Any]) -> EachlabsSettings:
        api_key = (conn.password or "").strip()
        if not api_key:
            raise api.EachlabsAuthError(
                f"Eachlabs connection {conn.conn_id!r} has no API key: put it in the password field"
            )
        return cls(
            host=api.validate_host(_connection_host(conn)),
            api_key=api_key,
            timeout=float(_extra(extra, "timeout", DEFAULT_TIMEOUT)),
            max_retries=int(_extra(extra, "max_retries", DEFAULT_MAX_RETRIES)),
            backoff_initial=float(_extra(extra, "backoff_initial", DEFAULT_BACKOFF_INITIAL)),
            backoff_max=float(_extra(extra, "backoff_max", DEFAULT_BACKOFF_MAX)),
        )


def _extra(extra: Mapping[str, Any], name: str, default: float) -> Any:
    """Extras may be plain or carry the ``extra__eachlabs__`` prefix older UIs wrote."""
    value = extra.get(name, extra.get(f"extra__eachlabs__{name}"))
    return default if value in (None, "") else value


def _connection_host(conn: Connection) -> str:
    host = (conn.host or "").strip()
    if not host:
        return api.DEFAULT_HOST
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    if conn.port and host.count(":") < 2:
        host = f"{host.rstrip('/')}:{conn.port}"
    return host


class EachlabsHook(BaseHook):
    """Talks to the Eachlabs API with the key and host of an ``eachlabs`` connection.

    :param eachlabs_conn_id: the connection; its password is the API key, its host the API base URL.
    """

    conn_name_attr = "eachlabs_conn_id"
    default_conn_name = "eachlabs_default"
    conn_type = "eachlabs"
    hook_name = "Eachlabs"

    def __init__(self, eachlabs_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eachlabs_conn_id = eachlabs_conn_id
        self._settings: EachlabsSettings | None = None
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        return f"EachlabsHook(eachlabs_conn_id={self.eachlabs_conn_id!r})"

    # --- the connection -------------------------------------------------------------------------

    @property
    def settings(self) -> EachlabsSettings:
        if self._settings is None:
            from airflow.sdk.log import mask_secret

            conn = self.get_connection(self.eachlabs_conn_id)
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

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call: the newest execution (the model route needs no key)."""
        try:
            self.list_executions(limit=1)
        except Exception as error:
            return False, str(error)
        return True, f"Connected to Eachlabs at {self.settings.host}"

    # --- the API, one method per verb -----------------------------------------------------------

    def create_prediction(
        self,
        model: str,
        input: Mapping[str, Any],
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> str:
        """Start a prediction and return its id. Never re-sent once it may have reached the server."""
        request = api.create_prediction_request(model, input, webhook_url, webhook_secret)
        prediction_id = self._call(request, api.read_created_prediction_id, idempotent=False)
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
    ) -> str:
        """Create a prediction exactly once, even when the network loses the answer.

        When a create fails in a way that may have left a prediction behind (a 5xx, a dropped
        connection, a read timeout, an unreadable 2xx), the account's executions are searched for it
        before anything is sent again: a prediction of the same model with the same input, created
        since ``since`` (default: this call) and not in ``exclude``. Only when none turns up within
        one request timeout is the create sent again, up to the connection's retry count.
        """
        since = time.time() if since is None else since
        for attempt in range(self.settings.max_retries + 1):
            try:
                return self.create_prediction(model, input, webhook_url, webhook_secret)
            except api.EachlabsAPIError as error:
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
            rows = page.get("executions") or []
            for row in rows:
                created = api.parse_timestamp(row.get("created_at"))
                if created is not None and created < earliest:
                    return ids
                ids.append(str(row.get("id")))
            if len(rows) < 100:
                break
        return ids

    def get_prediction(self, prediction_id: str) -> Prediction:
        request = api.get_prediction_request(prediction_id)
        return self._call(request, lambda response: api.read_prediction(response, prediction_id))

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
        """Upload a file through a presigned URL and return the ``public_url`` to pass as input."""
        target = self._call(
            api.presign_upload_request(content_type),
            lambda response: api.read_presigned_upload(api.read_json(response)),
        )
        headers = {"Content-Type": content_type, **target.required_headers}

        def put() -> None:
            api.raise_for_status(self._send_raw("PUT", target.presigned_url, headers=headers, data=content))

        transport.call_with_retries(put, self.settings, idempotent=True, log=self.log)
        return target.public_url

    def download(self, url: str, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES) -> api.Download:
        """Fetch an output file, safely: it comes from the internet, chosen by someone else.

        Only public HTTPS URLs (or the API host's own files) are fetched, every redirect is checked
        the same way before it is followed, the size is capped while reading, and the answer must
        say it is an image. The key goes along only to the API host itself.
        """
        from urllib.parse import urljoin

        for _ in range(MAX_REDIRECTS + 1):
            self._check_download_url(url)
            headers = self._auth_headers() if is_api_host_url(url, self.settings.host) else {}
            result = transport.call_with_retries(
                functools.partial(self._download_once, url, headers, max_bytes),
                self.settings,
                idempotent=True,
                log=self.log,
            )
            if isinstance(result, api.Download):
                return result
            url = urljoin(url, result)
        raise api.EachlabsDownloadError(f"output {url} redirects more than {MAX_REDIRECTS} times")

    def _check_download_url(self, url: str) -> None:
        if not (is_api_host_url(url, self.settings.host) or is_public_https_url(url)):
            raise api.EachlabsDownloadError(
                f"refusing to download {url}: outputs are fetched only over https:// from public hosts "
                "(or from the API host itself)"
            )

    def wait_for_prediction(
        self,
        prediction_id: str,
        poll_interval: float | None = None,
        timeout: float = 3600.0,
        *,
        model: str | None = None,
        started_at: float | None = None,
    ) -> Prediction:
        """Poll until the prediction ends; ``PredictionTimeout`` after ``timeout`` seconds."""
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
                step = loop.on_prediction(self.get_prediction(prediction_id), time.time())
            except api.EachlabsError as error:
                step = loop.on_error(error, time.time())
            if step.note:
                self.log.info(step.note)
            if step.done is not None:
                return step.done
            if step.timed_out:
                raise api.PredictionTimeout(prediction_id, time.time() - started, loop.last_status)
            time.sleep(step.wait)

    # --- async counterparts for the triggerer -----------------------------------------------------

    async def aget_prediction(self, prediction_id: str) -> Prediction:
        request = api.get_prediction_request(prediction_id)
        return await self._acall(request, lambda response: api.read_prediction(response, prediction_id))

    async def acancel_prediction(self, prediction_id: str) -> None:
        await self._acall(api.cancel_prediction_request(prediction_id), api.read_json)

    # --- sync transport ---------------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        return api.auth_headers(self.settings.api_key)

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def _call(self, request: ApiRequest, read: Callable[[ApiResponse], T], *, idempotent: bool = True) -> T:
        """Send an API request and read its answer, retrying as ``api.should_retry`` allows.

        Reading happens inside the retry, so an unreadable answer to a GET is asked for again.
        """

        def attempt() -> T:
            response = self._send_raw(
                request.method,
                self.settings.host + request.path,
                headers=self._auth_headers(),
                json=request.json,
                params=request.params,
            )
            return read(response)

        return transport.call_with_retries(attempt, self.settings, idempotent=idempotent, log=self.log)

    def _send_raw(self, method: str, url: str, **kwargs: Any) -> ApiResponse:
        return transport.send(self.session, method, url, timeout=self.settings.timeout, **kwargs)

    def _download_once(self, url: str, headers: dict[str, str], max_bytes: int) -> api.Download | str:
        return transport.download_once(self.session, url, headers, max_bytes, self.settings.timeout)

    # --- async transport -------------------------------------------------------------------------

    async def _acall(self, request: ApiRequest, read: Callable[[ApiResponse], T]) -> T:
        """``_call`` for the triggerer: idempotent requests only, the same retry policy."""
        settings = await self.aget_settings()
        url = settings.host + request.path

        async def attempt() -> T:
            return read(await transport.send_async(url, request, settings))

        return await transport.acall_with_retries(attempt, settings, log=self.log)


def _sent_input_matches(sent: Mapping[str, Any], candidate: Any) -> bool:
    """Every field this provider sent is in the candidate's input, unchanged (the API may add defaults)."""
    received = candidate.get("input") if isinstance(candidate, Mapping) else None
    return isinstance(received, Mapping) and all(received.get(k) == v for k, v in sent.items())
