"""What a connection says, read once, and every default the provider's layers share.

This sits below the transports and the hook so that both can use it without importing each other.
DAG files import it too (for its defaults), so the address rules and the error family load only when
a connection is read.
One name, one meaning: a request timeout is ``REQUEST_TIMEOUT``, how long a prediction may run is
``PREDICTION_TIMEOUT``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

DEFAULT_CONN_ID = "eachlabs_default"
CONN_TYPE = "eachlabs"
# One HTTP request, from asking for a socket's answer to its last byte.
REQUEST_TIMEOUT = 30.0
MAX_RETRIES = 5
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
# How long a prediction may run before it is cancelled and the task fails.
PREDICTION_TIMEOUT = timedelta(hours=1)
# The largest output file accepted; larger answers are refused while they are read.
MAX_OUTPUT_BYTES = 50 * 1024 * 1024


if TYPE_CHECKING:
    from airflow.sdk import Connection


@dataclass(frozen=True)
class EachlabsSettings:
    """The connection's host, key and retry settings; ``repr`` leaves the key out."""

    host: str
    api_key: str
    timeout: float = REQUEST_TIMEOUT
    max_retries: int = MAX_RETRIES
    backoff_initial: float = BACKOFF_INITIAL
    backoff_max: float = BACKOFF_MAX

    def __repr__(self) -> str:
        return f"EachlabsSettings(host={self.host!r}, api_key=***, timeout={self.timeout})"

    @classmethod
    def from_connection(cls, conn: Connection, extra: Mapping[str, Any]) -> EachlabsSettings:
        # Imported here: DAG files import this module (for its defaults) at every parse.
        from airflow_provider_eachlabs.addresses import validate_api_host
        from airflow_provider_eachlabs.exceptions import EachlabsConfigError

        api_key = (conn.password or "").strip()
        if not api_key:
            raise EachlabsConfigError(
                f"Eachlabs connection {conn.conn_id!r} has no API key: put it in the password field"
            )
        return cls(
            host=validate_api_host(connection_host(conn)),
            api_key=api_key,
            timeout=_extra_number(conn.conn_id, extra, "timeout", REQUEST_TIMEOUT, minimum=0.1),
            max_retries=int(_extra_number(conn.conn_id, extra, "max_retries", MAX_RETRIES, integer=True)),
            backoff_initial=_extra_number(conn.conn_id, extra, "backoff_initial", BACKOFF_INITIAL),
            backoff_max=_extra_number(conn.conn_id, extra, "backoff_max", BACKOFF_MAX),
        )


def connection_host(conn: Connection) -> str:
    """The connection's API base URL: its host, with the schema and port fields folded in."""
    from airflow_provider_eachlabs.addresses import DEFAULT_API_HOST

    host = (conn.host or "").strip()
    if not host:
        return DEFAULT_API_HOST
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    if conn.port and host.count(":") < 2:
        host = f"{host.rstrip('/')}:{conn.port}"
    return host


def _extra_number(
    conn_id: str,
    extra: Mapping[str, Any],
    name: str,
    default: float,
    *,
    minimum: float = 0.0,
    integer: bool = False,
) -> float:
    """An extra field as a number, or an error naming the connection, the field, the value and the rule.

    Extras may be plain or carry the ``extra__eachlabs__`` prefix older UIs wrote.
    """
    from airflow_provider_eachlabs.exceptions import EachlabsConfigError

    value = extra.get(name, extra.get(f"extra__{CONN_TYPE}__{name}"))
    if value in (None, ""):
        return default
    kind = "a whole number" if integer else "a number"
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number) or math.isinf(number) or number < minimum or (integer and number != int(number)):
        raise EachlabsConfigError(
            f"Eachlabs connection {conn_id!r}: extra field {name}={value!r} must be {kind} "
            f"of at least {minimum:g}"
        )
    return number


def default_deferrable() -> bool:
    """``[operators] default_deferrable``, as Airflow's own deferrable operators read it."""
    from airflow.sdk.configuration import conf

    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))
