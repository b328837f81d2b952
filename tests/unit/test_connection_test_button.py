"""The UI's "Test Connection" button on an Eachlabs connection: the body the UI posts goes through
the plugin's middleware into Airflow's own ``test_connection`` route, against a stored connection
without a port, as the Eachlabs form stores every one. Airflow 3.3.2 answered that body 400."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest

from airflow_provider_eachlabs.plugin import EachlabsPlugin
from airflow_provider_eachlabs.plugin.connection_test import (
    TEST_PATH,
    EachlabsConnectionTestMiddleware,
    without_zero_port,
)

STORED_KEY = "stored-key-5c2e"
HOST = "https://api.eachlabs.ai"
EXTRA = json.dumps({"timeout": 30, "max_retries": 5, "backoff_max": 60})


def ui_body(**changes: Any) -> dict[str, Any]:
    """What the connections list's Test button posts (captured in tests/e2e/test_browser.py): the
    row as listed, the key masked, and ``port: Number(null)``, which is 0."""
    body = {
        "conn_type": "eachlabs",
        "connection_id": "eachlabs_default",
        "description": "",
        "extra": EXTRA,
        "host": HOST,
        "login": "",
        "password": "***",
        "port": 0,
        "schema": "",
    }
    return {**body, **changes}


def through_middleware(body: bytes, path: str = TEST_PATH) -> bytes:
    """The body the app behind the middleware reads, and its content-length agrees."""
    from fastapi.testclient import TestClient

    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        seen["body"] = b"".join(chunks)
        seen["length"] = dict(scope["headers"]).get(b"content-length")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    TestClient(EachlabsConnectionTestMiddleware(app)).post(
        path, content=body, headers={"Content-Type": "application/json"}
    )
    assert seen["length"] == str(len(seen["body"])).encode()
    return bytes(seen["body"])


def press_test(body: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[bool, str]:
    """Airflow's own route, with the stored connection it would read from the metadata DB."""
    from airflow.api_fastapi.core_api.datamodels.connections import ConnectionBody
    from airflow.api_fastapi.core_api.routes.public import connections as route
    from airflow.models.connection import Connection

    stored = Connection(conn_id="eachlabs_default", conn_type="eachlabs", host=HOST, password=STORED_KEY)
    stored.set_extra(EXTRA)

    def tested(conn: Connection) -> tuple[bool, str]:
        return True, f"{conn.conn_type} {conn.host} port={conn.port} key={conn.password}"

    class Admin:
        def is_authorized_connection(self, **_: Any) -> bool:
            return True

    monkeypatch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    monkeypatch.setattr(Connection, "get_team_name", staticmethod(lambda *_a, **_k: None), raising=False)
    monkeypatch.setattr(Connection, "get_connection_from_secrets", classmethod(lambda *_a, **_k: stored))
    monkeypatch.setattr(Connection, "test_connection", tested)
    caller = {"user": object(), "auth_manager": Admin()}  # Airflow 3.2.0's route takes neither
    taken = inspect.signature(route.test_connection).parameters
    answer = route.test_connection(
        ConnectionBody.model_validate_json(body), **{k: v for k, v in caller.items() if k in taken}
    )
    return answer.status, answer.message


def test_the_ui_test_button_reaches_the_hook_with_the_stored_key(monkeypatch: pytest.MonkeyPatch) -> None:
    body = through_middleware(json.dumps(ui_body()).encode())
    assert press_test(body, monkeypatch) == (True, f"eachlabs {HOST} port=None key={STORED_KEY}")


def test_another_host_still_needs_its_own_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's guard stands: the stored key is never sent to a host the body names instead."""
    from airflow.api_fastapi.core_api.routes.public import connections as route
    from fastapi import HTTPException

    if not hasattr(route, "_same_endpoint"):
        pytest.skip("this Airflow's test route has no host/port guard (3.2.0 has none)")
    body = through_middleware(json.dumps(ui_body(host="https://attacker.example")).encode())
    with pytest.raises(HTTPException) as refused:
        press_test(body, monkeypatch)
    assert refused.value.status_code == 400
    body = through_middleware(json.dumps(ui_body(port=8443)).encode())
    with pytest.raises(HTTPException):
        press_test(body, monkeypatch)


@pytest.mark.parametrize(
    "body",
    [
        ui_body(conn_type="http"),  # another type's port 0 is Airflow's to judge
        ui_body(port=None),
        ui_body(port=443),
        ui_body(port=False),
        ui_body(port=0.0),
        {k: v for k, v in ui_body().items() if k != "port"},
    ],
)
def test_anything_else_passes_as_it_came(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    assert without_zero_port(raw) is None
    assert through_middleware(raw) == raw


def test_only_the_test_route_is_touched() -> None:
    raw = json.dumps(ui_body()).encode()
    assert through_middleware(raw, path="/api/v2/connections") == raw
    assert through_middleware(b"not json") == b"not json"
    assert through_middleware(raw + b" " * 70_000) == raw + b" " * 70_000  # past the cap: unread


def test_the_plugin_installs_the_middleware() -> None:
    middlewares = EachlabsPlugin().fastapi_root_middlewares
    assert [m["middleware"] for m in middlewares] == [EachlabsConnectionTestMiddleware]


@pytest.mark.parametrize("host", [HOST, "api.eachlabs.ai", ""])
def test_port_0_is_no_port_for_an_eachlabs_connection(host: str) -> None:
    """Why taking ``port: 0`` out changes no destination: the hook reads 0 as no port."""
    from airflow.models.connection import Connection

    from airflow_provider_eachlabs.settings import connection_host

    def address(port: int | None) -> str:
        return connection_host(Connection(conn_id="c", conn_type="eachlabs", host=host, port=port))

    assert address(0) == address(None) == HOST
