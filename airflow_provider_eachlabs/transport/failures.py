"""What a failed exchange means to the caller, the same for both transports.

Every failure becomes an ``EachlabsError``: the trigger yields an event for it and the retry layer
reads it, instead of a library's exception escaping with a traceback nobody can act on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_eachlabs.exceptions import EachlabsConnectionError, EachlabsDownloadError, EachlabsError
from airflow_provider_eachlabs.redaction import redact
from airflow_provider_eachlabs.transport.body import BodyTooLarge

if TYPE_CHECKING:
    from airflow_provider_eachlabs.api import HttpRequest
    from airflow_provider_eachlabs.settings import EachlabsSettings


class PeerRefused(Exception):
    """A public-only request met a non-public address (raised below the HTTP library)."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        super().__init__(peer)


def as_eachlabs_error(
    error: Exception,
    request: HttpRequest,
    settings: EachlabsSettings,
    *,
    never_sent: bool,
    timed_out: bool,
) -> EachlabsError:
    """``never_sent``: the connection never opened; ``timed_out``: the total deadline cut it."""
    if isinstance(error, BodyTooLarge):
        return request.oversize_error(f"the answer from {request.url} is {error}")
    if isinstance(error, PeerRefused):
        return EachlabsDownloadError(
            f"refusing to connect to {request.url}: its host resolves to {error.peer}, "
            "which is not a public address"
        )
    if isinstance(error, EachlabsError):
        return error
    if timed_out:
        return EachlabsConnectionError(
            f"{request.method} {request.url} took longer than the {settings.timeout:g}s request timeout",
            request_sent=True,
        )
    # A library's reason can quote what the server sent (a status line it could not parse).
    detail = redact(_root_cause(error), (settings.api_key,))
    if "wrong version number" in detail.lower():
        detail += (
            "; the host did not answer with TLS: if it serves plain HTTP on this machine (the "
            "simulator), write http:// in front of the connection's host"
        )
    return EachlabsConnectionError(
        f"{request.method} {request.url} failed: {type(error).__name__}: {detail}",
        request_sent=not never_sent,
    )


def _root_cause(error: BaseException) -> str:
    """The innermost reason a library gives, without its wrappers' repeated host and retry text."""
    reason: object = error
    for _ in range(5):
        inner = getattr(reason, "reason", None) or (
            reason.args[0] if isinstance(reason, BaseException) and reason.args else None
        )
        if not isinstance(inner, BaseException):
            break
        reason = inner
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    # urllib3 prefixes "HTTPConnection(host='...', port=...): "; the URL is in the message already.
    if text.startswith(("HTTPConnection(", "HTTPSConnection(")) and "): " in text:
        text = text.split("): ", 1)[1]
    return text[:300]
