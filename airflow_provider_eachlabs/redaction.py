"""Secrets taken out of what the API says, before the provider repeats a word of it.

A hostile or buggy API may repeat the key it was sent, or the webhook secret, in an error body or in
a failed prediction's ``error_message``. Airflow's masker hides a secret only in the logs of a
process that registered it, while the provider's error messages also land in XCom, the UI plugin's
pages, a batch's results manifest and journal, and trigger events: none of those pass the masker. So
the hook redacts every answer where it arrives (``ApiResponse.redacted``), and nothing built from an
answer can carry a secret on, whoever builds it.

Nothing here imports Airflow or an HTTP library.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "***"
# Shorter strings are left alone: replacing them would eat ordinary words of a message. Airflow's
# masker skips secrets shorter than 5 characters too.
MIN_SECRET_LENGTH = 5


@functools.lru_cache(maxsize=64)
def secret_forms(secrets: tuple[str | None, ...]) -> tuple[str, ...]:
    """Every way an answer may spell the secrets: as is, URL-encoded, and escaped in a JSON string.

    Longest first, so that a secret containing another is replaced whole.
    """
    forms: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            forms.update((secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]))
    return tuple(sorted(forms, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret of at least ``MIN_SECRET_LENGTH`` characters replaced by ``***``."""
    for form in secret_forms(tuple(secrets)):
        text = text.replace(form, REDACTED)
    return text


def redact_bytes(content: bytes, secrets: Iterable[str | None]) -> bytes:
    """``redact`` for a body as it arrived, before anything decodes it."""
    for form in secret_forms(tuple(secrets)):
        content = content.replace(form.encode(), REDACTED.encode())
    return content


def redact_json(value: Any, secrets: Iterable[str | None]) -> Any:
    """A JSON-like value (a trigger event, say) with ``redact`` applied to every string in it."""
    found = tuple(secrets)
    if isinstance(value, str):
        return redact(value, found)
    if isinstance(value, dict):
        return {redact_json(key, found): redact_json(item, found) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_json(item, found) for item in value]
    return value
