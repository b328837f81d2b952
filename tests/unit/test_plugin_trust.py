"""The api-server trusts nothing a task wrote: which files it reads, how much it reads, how long it
waits for the API, and what it answers. Each test reproduces a way a hostile XCom, manifest or API
answer reached past the plugin before."""

from __future__ import annotations

import json
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_eachlabs.plugin import batches, live
from airflow_provider_eachlabs.plugin.files import Refused, place_inside, read_inside

# -- files: only inside the task's output_path -------------------------------------------------------


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    folder = tmp_path / "outputs"
    folder.mkdir()
    (folder / "pred_1.png").write_bytes(b"inside")
    (tmp_path / "secret.txt").write_bytes(b"passport scan")
    return folder


def test_a_file_directly_inside_output_path_is_read(outputs: Path) -> None:
    assert read_inside(str(outputs / "pred_1.png"), f"{outputs}/", 100) == b"inside"
    assert read_inside(f"file://{outputs}/pred_1.png", str(outputs), 100) == b"inside"


def test_an_output_path_naming_one_file_reads_that_file_only(outputs: Path) -> None:
    target = str(outputs / "pred_1.png")
    assert read_inside(target, target, 100) == b"inside"
    with pytest.raises(Refused, match="is not inside the task's output_path"):
        read_inside(str(outputs / "other.png"), target, 100)


@pytest.mark.parametrize(
    "recorded",
    [
        "{tmp}/secret.txt",
        "{out}/../secret.txt",
        "file://{out}/%2e%2e/secret.txt",
        "file://{out}/..%2fsecret.txt",
        "/etc/passwd",
        "{out}/nested/pred_1.png",
        "{out}/.hidden",
        "file://evil-host{out}/pred_1.png",
        "s3://aws_default@bucket/outputs/pred_1.png",
    ],
)
def test_a_recorded_path_outside_output_path_is_refused_before_the_disk_is_touched(
    outputs: Path, recorded: str
) -> None:
    path = recorded.format(tmp=outputs.parent, out=outputs)
    with pytest.raises(Refused) as refused:
        read_inside(path, f"{outputs}/", 1000)
    assert "passport" not in str(refused.value)


def test_a_symlink_inside_output_path_is_not_followed(outputs: Path) -> None:
    (outputs / "link.png").symlink_to(outputs.parent / "secret.txt")
    with pytest.raises(Refused, match="is a symbolic link"):
        read_inside(str(outputs / "link.png"), f"{outputs}/", 1000)


def test_a_fifo_inside_output_path_is_refused_at_once(outputs: Path) -> None:
    os.mkfifo(outputs / "pipe.png")
    started = time.monotonic()
    with pytest.raises(Refused, match="is not a regular file"):
        read_inside(str(outputs / "pipe.png"), f"{outputs}/", 1000)
    assert time.monotonic() - started < 1.0


def test_a_file_over_the_limit_is_refused_before_it_is_read(outputs: Path) -> None:
    (outputs / "big.png").write_bytes(b"x" * 2000)
    with pytest.raises(ValueError, match="larger than the 1000 byte limit"):
        read_inside(str(outputs / "big.png"), f"{outputs}/", 1000)


@pytest.mark.parametrize(
    ("recorded", "rule"),
    [
        ("s3://other_conn@bucket/out/a.png", "another store, bucket or connection"),
        ("s3://bucket/out/a.png", "another store, bucket or connection"),
        ("s3://team_conn@other-bucket/out/a.png", "another store, bucket or connection"),
        ("s3://team_conn@bucket/out/%2e%2e/a.png", "escaped characters"),
        ("s3://team_conn@bucket/out/../private/a.png", "is not inside"),
        ("s3://team_conn@bucket/out/a.png?versionId=1", "another store, bucket or connection"),
        ("/out/a.png", "is not inside"),
    ],
)
def test_object_storage_uris_keep_the_output_paths_store_bucket_and_connection(
    recorded: str, rule: str
) -> None:
    with pytest.raises(Refused, match=rule):
        place_inside(recorded, "s3://team_conn@bucket/out/")
    place = place_inside("s3://team_conn@bucket/out/a.png", "s3://team_conn@bucket/out/")
    assert (place.folder, place.name, place.local) == ("s3://team_conn@bucket/out", "a.png", False)


# -- manifests: streamed, bounded, indexed ------------------------------------------------------------


def _manifest(path: Path, rows: int, *, cost: Any = 0.05) -> None:
    with path.open("w") as handle:
        for n in range(rows):
            status = "failed" if n % 10 == 9 else "success"
            row = {
                "key": f"item_{n}",
                "status": status,
                "prediction_id": f"pred_{n}",
                "stored_path": f"{path.parent}/item_{n}.png" if status == "success" else None,
                "cost": cost,
                "predict_time": float(n % 7),
                "error": "x" * 200 if status == "failed" else None,
            }
            handle.write(json.dumps(row) + "\n")


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    batches._kept.clear()
    live._statuses.clear()


def test_a_manifest_is_counted_in_one_pass_and_any_items_row_found_again(tmp_path: Path) -> None:
    path = tmp_path / "eachlabs-results.jsonl"
    _manifest(path, 1000)
    with path.open("a") as handle:  # a retry re-did item_3: its newest row wins
        handle.write(json.dumps({"key": "item_3", "status": "success", "stored_path": "again"}) + "\n")
        handle.write("not json\n" + json.dumps({"key": "huge", "error": "y" * 100_000}) + "\n")
    found = batches.batch_results(str(path), f"{tmp_path}/")
    assert (found.done, found.stored, found.failed, found.spend) == (1001, 901, 100, 50.0)
    assert len(found.newest) == batches.NEWEST_KEPT and found.newest[0]["key"] == "item_3"
    assert len(found.failures) == batches.FAILURES_KEPT and found.failures[0]["key"] == "item_9"
    assert found.predict_time(50) == 3.0
    assert batches.batch_row(str(path), f"{tmp_path}/", "item_3") == {
        "key": "item_3",
        "status": "success",
        "stored_path": "again",
    }
    assert batches.batch_row(str(path), f"{tmp_path}/", "item_500")["prediction_id"] == "pred_500"  # type: ignore[index]
    assert batches.batch_row(str(path), f"{tmp_path}/", "huge") is None  # a line past 64 KiB is no row
    assert batches.batch_row(str(path), f"{tmp_path}/", "nope") is None


def test_a_forged_cost_does_not_reach_the_spend(tmp_path: Path) -> None:
    path = tmp_path / "eachlabs-results.jsonl"
    rows = [{"key": "a", "cost": -1000}, {"key": "b", "cost": "1000"}, {"key": "c", "cost": True}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"key": "d", "cost": NaN}\n')
    assert batches.batch_results(str(path), f"{tmp_path}/").spend == 0.0


def test_a_large_manifest_costs_the_api_server_an_index_not_its_text(tmp_path: Path) -> None:
    """100,000 rows (23 MB): about 16 bytes a row are kept (index and predict times), and the read
    never holds the text (it took the api-server to 1.5 GB for one view of a 35 MB manifest)."""
    path = tmp_path / "eachlabs-results.jsonl"
    _manifest(path, 100_000)
    tracemalloc.start()
    try:
        found = batches.batch_results(str(path), f"{tmp_path}/")
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found.done == 100_000 and path.stat().st_size > 20 * 2**20
    assert kept < 3 * 2**20 and peak < 10 * 2**20, (kept, peak)


def test_a_manifest_over_the_cap_is_a_clear_answer_not_a_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "eachlabs-results.jsonl"
    _manifest(path, 100)
    monkeypatch.setattr(batches, "MANIFEST_MAX_BYTES", 1024)
    with pytest.raises(batches.TooLarge, match=r"MiB, more than the 0 MiB this page reads"):
        batches.batch_results(str(path), f"{tmp_path}/")


def test_concurrent_views_of_one_manifest_read_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "eachlabs-results.jsonl"
    _manifest(path, 20_000)
    scans: list[int] = []
    scan = batches._scan

    def counted(handle: Any, where: str) -> Any:
        scans.append(1)
        return scan(handle, where)

    monkeypatch.setattr(batches, "_scan", counted)
    threads = [
        threading.Thread(target=batches.batch_results, args=(str(path), f"{tmp_path}/")) for _ in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(scans) == 1


def test_a_manifest_outside_output_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.jsonl").write_text('{"key": "a"}\n')
    (tmp_path / "out").mkdir()
    with pytest.raises(Refused):
        batches.batch_results(str(tmp_path / "elsewhere.jsonl"), f"{tmp_path}/out/")


# -- the live status: one request per prediction, a few at a time, at once or not at all ------------


class _SlowHook:
    def __init__(self, delay: float, calls: list[str], error: Exception | None = None) -> None:
        self.delay, self.calls, self.error = delay, calls, error

    def get_prediction(self, prediction_id: str) -> Any:
        self.calls.append(prediction_id)
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        from types import SimpleNamespace

        return SimpleNamespace(status="processing")


def test_many_viewers_of_one_prediction_cause_one_status_request(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(live, "page_hook", lambda conn_id: _SlowHook(0.5, calls))
    answers: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda: answers.append(live.live_status("c", "p1", lambda s: "wait")))
        for _ in range(30)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["p1"]
    assert sum(answer["status"] == "processing" for answer in answers) >= 1
    assert live.live_status("c", "p1", lambda s: "wait")["status"] == "processing"  # fresh: not asked again
    assert calls == ["p1"]


def test_a_slow_api_holds_a_page_at_most_the_page_timeout_and_others_are_told_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live, "PAGE_TIMEOUT", 0.5)
    calls: list[str] = []
    monkeypatch.setattr(live, "page_hook", lambda conn_id: _SlowHook(3.0, calls))
    took: list[float] = []
    answers: list[dict[str, Any]] = []

    def view(n: int) -> None:
        started = time.monotonic()
        answers.append(live.live_status("c", f"p{n}", lambda s: "wait"))
        took.append(time.monotonic() - started)

    threads = [threading.Thread(target=view, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == live.MAX_REQUESTS  # the rest were not sent at all
    assert max(took) < 2.5, took
    busy = [a for a in answers if "already asking the API" in a.get("note", "")]
    late = [a for a in answers if a.get("error") == "Status not read: the API did not answer within 0.5 s"]
    assert (len(busy), len(late)) == (20 - live.MAX_REQUESTS, live.MAX_REQUESTS)
    time.sleep(3.2)  # the overrunning requests end and give their slots back


def test_a_status_failure_shows_the_providers_words_not_the_upstream_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_eachlabs.exceptions import EachlabsServerError

    upstream = EachlabsServerError(
        "HTTP 500: <script>alert(1)</script> key=sk-live-123", status_code=500, request_id="req_9"
    )
    monkeypatch.setattr(live, "page_hook", lambda conn_id: _SlowHook(0, [], upstream))
    answer = live.live_status("c", "p1", lambda s: "wait")
    assert answer["error"] == "Status not read: the API failed (request id req_9)"


def test_a_connection_of_another_type_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

    monkeypatch.setattr(
        EachlabsHook, "get_connection", classmethod(lambda cls, conn_id: SimpleNamespace(conn_type="http"))
    )
    with pytest.raises(live.NotUsable, match="is of type 'http', not 'eachlabs'"):
        live.page_hook("other_team_http")
    answer = live.live_status("other_team_http", "p1", lambda s: "wait")
    assert answer["error"] == (
        "Status not read: the task's connection 'other_team_http' is of type 'http', not 'eachlabs': "
        "the api-server uses only Eachlabs connections"
    )


# -- the app: every task route guarded by the DAG in its path, every answer hardened ------------------


def test_every_task_route_asks_for_read_access_to_the_dag_in_its_path() -> None:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    from airflow_provider_eachlabs.plugin.app import create_app

    app = create_app()
    routes = [route for route in app.routes if getattr(route, "dependant", None) is not None]
    task_routes = [route for route in routes if route.path.startswith("/ti/")]  # type: ignore[attr-defined]
    assert {route.path for route in task_routes} == {  # type: ignore[attr-defined]
        "/ti/{dag_id}/{run_id}/{task_id}",
        "/ti/{dag_id}/{run_id}/{task_id}/status",
        "/ti/{dag_id}/{run_id}/{task_id}/image/{kind}",
        "/ti/{dag_id}/{run_id}/{task_id}/batch/{key}",
    }
    for route in task_routes:
        guards = [
            dependency.call
            for dependency in route.dependant.dependencies  # type: ignore[attr-defined]
            if dependency.call.__qualname__ == "requires_access_dag.<locals>.inner"
        ]
        assert len(guards) == 1, route.path  # type: ignore[attr-defined]
        closure = {
            cell.cell_contents for cell in guards[0].__closure__ or () if not callable(cell.cell_contents)
        }
        assert {"GET", DagAccessEntity.TASK_INSTANCE} <= closure, route.path  # type: ignore[attr-defined]
    assert [route.path for route in routes if not route.path.startswith("/ti/")] == ["/"]  # type: ignore[attr-defined]


def test_every_answer_carries_a_content_security_policy_and_nosniff() -> None:
    from fastapi.testclient import TestClient

    from airflow_provider_eachlabs.plugin.app import create_app

    answer = TestClient(create_app()).get("/no-such-route")
    assert answer.status_code == 404
    policy = answer.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'self'" in policy
    assert (
        "script-src 'nonce-" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    )
    assert answer.headers["x-content-type-options"] == "nosniff"


# -- hostile records: every page still renders, with a reason in place of what cannot be shown ---------

HOSTILE_VALUES: list[Any] = [None, 7, True, -1.5, [], ["x"], {}, {"a": {"b": 1}}, "x" * 100_000, "<script>"]
RECORDED_FIELDS = (
    "status",
    "ok",
    "error_code",
    "error_message",
    "error_class",
    "request_id",
    "stored_path",
    "output_url",
    "predict_time",
    "cost",
    "prediction_id",
    "batch",
    "items",
)


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=repr)
def test_a_task_page_renders_whatever_the_task_recorded(value: Any) -> None:
    from airflow_provider_eachlabs.plugin.app import render_task_page, template_environment
    from airflow_provider_eachlabs.plugin.records import TaskView

    env = template_environment()
    for name in RECORDED_FIELDS:
        view = TaskView("dag", "run", "task", -1, "failed", 1, "FluxFillOperator", None, None)
        view.prediction_id = "pred_1"
        view.outcome = {"ok": False, "status": "failed", name: value}
        view.result = {name: value}
        view.request = {"input": {"prompt": value, "image": value, "mask": value}, name: value}
        page = render_task_page(env, view, "/eachlabs/ti/dag/run/task", "n0nce")
        assert "<script>alert" not in page and 'nonce="n0nce"' in page, name
        view.batch = {"items": value, "model": value, "results_path": value, "output_path": value}
        page = render_task_page(env, view, "/eachlabs/ti/dag/run/task", "n0nce")
        assert "The results cannot be read" in page, name


def test_a_batch_page_renders_hostile_rows(tmp_path: Path) -> None:
    from airflow_provider_eachlabs.plugin.app import render_task_page, template_environment
    from airflow_provider_eachlabs.plugin.authority import Authority
    from airflow_provider_eachlabs.plugin.records import TaskView

    rows = [
        {"key": 1, "status": value, "error": value, "error_code": value, "prediction_id": value}
        for value in HOSTILE_VALUES
    ]
    (tmp_path / "eachlabs-results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    view = TaskView("dag", "run", "task", -1, "failed", 1, "FluxFillBatchOperator", None, None)
    view.batch = {"items": 10, "model": "flux-fill-pro"}
    view.authority = Authority("eachlabs_default", f"{tmp_path}/", None)
    page = render_task_page(template_environment(), view, "/eachlabs/ti/dag/run/task", "n0nce")
    # Nine rows: the one whose fields hold 100,000 characters is past the line limit and skipped.
    assert 'id="done">9 / 10<' in page and 'id="failed">9<' in page and "&lt;script&gt;" in page


def test_a_batch_items_stored_path_outside_output_path_is_not_served(tmp_path: Path) -> None:
    """A results row is written by the task: its ``stored_path`` is a claim checked like XCom's."""
    from airflow_provider_eachlabs.plugin.authority import Authority
    from airflow_provider_eachlabs.plugin.images import Unavailable, batch_picture
    from airflow_provider_eachlabs.plugin.records import TaskView

    (tmp_path / "out").mkdir()
    secret = tmp_path / "passport.png"
    secret.write_bytes((Path(__file__).parents[2] / "example_dags" / "data" / "scene.png").read_bytes())
    view = TaskView("dag", "run", "task", -1, "success", 1, "FluxFillBatchOperator", None, None)
    view.authority = Authority("eachlabs_default", f"{tmp_path}/out/", None)
    for forged in (
        str(secret),
        f"{tmp_path}/out/../passport.png",
        f"file://{tmp_path}/out/%2e%2e/passport.png",
    ):
        with pytest.raises(Unavailable, match="is not inside the task's output_path"):
            batch_picture(view, {"key": "a", "stored_path": forged}, thumbnail=False)
