"""The Eachlabs UI plugin in the real api-server: the task tab, its images, its live status, the fills
page, and who may see them.

Everything is fetched as a browser or a script would, over HTTP with a user's token: the admin (may
read every DAG), nobody (no token: 401), and an outsider who may read no DAG (403). The page is
addressed by dag, run and task only; every figure it shows is checked against what the task recorded
in XCom, and no answer carries the API key.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import time
from typing import Any
from urllib.parse import quote

import pytest
import requests

from airflow_provider_eachlabs.imageinfo import is_whole_image, read_image_info
from airflow_provider_eachlabs.links import task_tab_path
from tests.e2e.conftest import API_KEY, OUTSIDER_USER, ROOT, AirflowApi, AirflowStack
from tests.e2e.rest import trigger_until_deferred

FILL_DAG, FILL_TASK = "eachlabs_flux_fill", "remove_crate"
SCENE = ROOT / "example_dags" / "data" / "scene.png"
SEEN: list[bytes] = []  # every body the plugin answered, searched for the key at the end


def plugin(
    stack: AirflowStack, path: str, *, token: str | None = "admin", **params: Any
) -> requests.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {_token(stack, token)}"}
    answer = requests.get(f"{stack.base_url}/eachlabs{path}", headers=headers, params=params, timeout=60)
    SEEN.append(answer.content)
    return answer


_TOKENS: dict[str, str] = {}


def _token(stack: AirflowStack, who: str) -> str:
    if who not in _TOKENS:
        user = OUTSIDER_USER if who == "outsider" else "admin"
        api = AirflowApi(stack.base_url, user, stack.password)
        api.login()
        _TOKENS[who] = str(api.session.headers["Authorization"]).removeprefix("Bearer ")
    return _TOKENS[who]


def ti_path(dag_id: str, run_id: str, task_id: str) -> str:
    return "/ti/" + "/".join(quote(part, safe="") for part in (dag_id, run_id, task_id))


def images_on(page: str) -> dict[str, str]:
    """The page's image sources, by kind (before, mask, after)."""
    return {kind: src for src, kind in re.findall(r'<img src="([^"]+/image/(before|mask|after)[^"]*)"', page)}


def fetch(stack: AirflowStack, src: str) -> requests.Response:
    answer = requests.get(
        f"{stack.base_url}{src.replace('&amp;', '&')}",
        headers={"Authorization": f"Bearer {_token(stack, 'admin')}"},
        timeout=60,
    )
    SEEN.append(answer.content)
    return answer


@pytest.fixture(scope="module")
def succeeded(dags_ready: AirflowStack) -> tuple[str, dict[str, Any]]:
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    run_id = stack.api.trigger(FILL_DAG)
    assert stack.api.wait_run(FILL_DAG, run_id) == "success", stack.logs()
    return run_id, stack.api.xcom(FILL_DAG, run_id, FILL_TASK, "return_value")


def test_the_tab_shows_a_succeeded_fill_with_its_three_images(
    dags_ready: AirflowStack, succeeded: tuple[str, dict[str, Any]]
) -> None:
    stack = dags_ready
    run_id, result = succeeded
    answer = plugin(
        stack, ti_path(FILL_DAG, run_id, FILL_TASK), map_index="{MAP_INDEX}"
    )  # as the UI sends it
    assert answer.status_code == 200, answer.text[:2000]
    page = answer.text
    for shown in (result["prediction_id"], ">success<", "$0.05", result["sha256"], result["stored_path"]):
        assert shown in page, shown
    assert "an empty green meadow under a clear sky" in page and "seed" in page
    sources = images_on(page)
    assert set(sources) == {"before", "mask", "after"}
    pictures = {kind: fetch(stack, src) for kind, src in sources.items()}
    for kind, picture in pictures.items():
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png", kind
        info = read_image_info(picture.content)
        assert info is not None and is_whole_image(picture.content, info) and info.width > 0, kind
    assert pictures["before"].content == SCENE.read_bytes()  # the input as uploaded
    assert hashlib.sha256(pictures["after"].content).hexdigest() == result["sha256"]  # the stored output


def test_the_tab_says_why_a_rejected_fill_failed(dags_ready: AirflowStack) -> None:
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    stack.fast_sim.inject("create", "fail", error_code="PROVIDER_REJECTED", error_message="flagged input")
    try:
        run_id = stack.api.trigger(FILL_DAG)
        assert stack.api.wait_run(FILL_DAG, run_id) == "failed"
    finally:
        stack.fast_sim.clear_faults()
    page = plugin(stack, ti_path(FILL_DAG, run_id, FILL_TASK)).text
    assert "The prediction failed (PROVIDER_REJECTED)" in page and "flagged input" in page
    assert re.search(r"request id <code>req_[0-9a-f]+</code>", page), page
    assert "content policy rejected the input" in page  # what to do, in plain sight
    assert set(images_on(page)) == {"before", "mask"}  # no image that is bound to break:
    assert "Not shown: the prediction failed, so it has no output" in page  # the reason, in its place
    after = plugin(stack, ti_path(FILL_DAG, run_id, FILL_TASK) + "/image/after")
    assert after.status_code == 404 and after.text == "the prediction failed, so it has no output"


def test_the_tab_follows_a_deferred_fill_live(dags_ready: AirflowStack) -> None:
    stack = dags_ready
    sim = stack.slow_sim
    stack.use_simulator(sim)
    try:
        run_id = trigger_until_deferred(stack, FILL_DAG)
        path = ti_path(FILL_DAG, run_id, FILL_TASK)
        page = plugin(stack, path).text
        assert "waiting" in page and "/status?map_index=-1" in page
        gets = sim.counters.gets
        live = plugin(stack, f"{path}/status").json()
        assert live["task_state"] == "deferred" and live["status"] in ("starting", "processing"), live
        assert sim.counters.gets == gets + 1  # fetched by the api-server, with the connection's key
        assert stack.api.wait_run(FILL_DAG, run_id, 180) == "success"
        done = plugin(stack, f"{path}/status").json()
        assert (done["task_state"], done["status"]) == ("success", "success"), done
    finally:
        stack.use_simulator(stack.fast_sim)


def test_the_fills_page_adds_up_what_the_api_billed_for_the_dags_runs(
    dags_ready: AirflowStack, succeeded: tuple[str, dict[str, Any]]
) -> None:
    """A run's predictions and their cost, as the simulator billed them, are what the page adds."""
    stack = dags_ready
    sim = stack.fast_sim
    stack.use_simulator(sim)

    def totals() -> tuple[int, float]:
        page = plugin(stack, "/", dag_id=FILL_DAG).text
        bought = int(re.search(r'id="bought">(\d+)<', page).group(1))  # type: ignore[union-attr]
        spend = float(re.search(r'id="spend">\$([0-9.]+)<', page).group(1))  # type: ignore[union-attr]
        return bought, spend

    before, known = totals(), set(sim.predictions)
    run_id = stack.api.trigger(FILL_DAG)
    assert stack.api.wait_run(FILL_DAG, run_id, 180) == "success", stack.logs()
    billed = [p for p in sim.predictions.values() if p.id not in known]
    after = totals()
    assert after[0] - before[0] == len(billed) == 1
    assert after[1] - before[1] == pytest.approx(sum(p.cost for p in billed), abs=0.005)

    page = plugin(stack, "/").text
    run_id, result = succeeded
    assert result["prediction_id"] in page
    assert f'href="{task_tab_path(FILL_DAG, run_id, FILL_TASK, -1, "/")}"' in page  # opens its tab
    filtered = plugin(stack, "/", dag_id=FILL_DAG, status="succeeded").text
    badges = re.findall(r'<span class="badge \w*">(\w+)</span>', filtered.split('id="rows"')[1])
    assert badges and set(badges) == {"succeeded"}, badges
    assert all(f">{FILL_DAG}</a>" in row for row in filtered.split('id="rows"')[1].split("<tr>")[2:])


def test_a_batch_task_shows_its_counts_and_a_grid_of_its_outputs(dags_ready: AirflowStack) -> None:
    """The batch operator's example, deferred in the real triggerer: its tab reads its results."""
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    run_id = stack.api.trigger("eachlabs_batch_operator")
    assert stack.api.wait_run("eachlabs_batch_operator", run_id, 240) == "success", stack.logs()
    summary = stack.api.xcom("eachlabs_batch_operator", run_id, "fill_all", "return_value")
    path = ti_path("eachlabs_batch_operator", run_id, "fill_all")
    page = plugin(stack, path).text
    assert 'id="done">3 / 3<' in page and 'id="stored">3<' in page and 'id="failed">0<' in page
    assert f'id="spend">${summary["spend"]:.2f}<' in page and summary["results_path"] in page
    thumbnails = re.findall(r'<img loading="lazy" src="([^"]+/batch/(product_\d)[^"]*)"', page)
    assert sorted(key for _, key in thumbnails) == ["product_1", "product_2", "product_3"]
    for src, key in thumbnails:
        picture = fetch(stack, src)
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png", key
        assert read_image_info(picture.content) is not None
    unknown = plugin(stack, f"{path}/batch/product_9")
    assert unknown.status_code == 404 and unknown.text == "no such item in the batch's results"
    assert plugin(stack, f"{path}/batch/product_1", token="outsider").status_code == 403
    overview = plugin(stack, "/", dag_id="eachlabs_batch_operator").text
    assert "batch try: 3 bought, 3 succeeded" in overview


def test_without_a_token_every_route_answers_401(
    dags_ready: AirflowStack, succeeded: tuple[str, Any]
) -> None:
    path = ti_path(FILL_DAG, succeeded[0], FILL_TASK)
    for route in (path, f"{path}/status", f"{path}/image/after", "/"):
        assert plugin(dags_ready, route, token=None).status_code == 401, route


def test_a_user_who_may_read_no_dag_learns_nothing(
    dags_ready: AirflowStack, succeeded: tuple[str, Any]
) -> None:
    path = ti_path(FILL_DAG, succeeded[0], FILL_TASK)
    for route in (path, f"{path}/status", f"{path}/image/after"):
        answer = plugin(dags_ready, route, token="outsider")
        assert answer.status_code == 403, route
        assert succeeded[1]["prediction_id"] not in answer.text
    overview = plugin(dags_ready, "/", token="outsider")
    assert overview.status_code == 200 and 'id="bought">0<' in overview.text
    assert succeeded[1]["prediction_id"] not in overview.text


def test_the_plugin_is_listed_and_no_answer_carries_the_key(dags_ready: AirflowStack) -> None:
    listed = dags_ready.cli("plugins", "--output", "json")
    assert listed.returncode == 0 and '"name": "eachlabs"' in listed.stdout, listed.stdout + listed.stderr
    assert '"destination": "task_instance"' in listed.stdout and '"url_prefix": "/eachlabs"' in listed.stdout
    assert SEEN, "no plugin answers were collected"
    assert [body for body in SEEN if API_KEY.encode() in body] == []


def test_the_fills_page_shows_what_the_api_billed_beside_what_the_dags_recorded(
    dags_ready: AirflowStack, succeeded: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prediction bought with the same key outside Airflow (a notebook's) is listed as billed and
    recorded by no task; the DAGs' own predictions are not."""
    if importlib.util.find_spec("airflow.models.task_state_store") is None:
        pytest.skip("the ledger the panel compares is kept in Airflow 3.3's task_state_store")
    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

    stack = dags_ready
    sim = stack.fast_sim
    stack.use_simulator(sim)
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOTEBOOK",
        f'{{"conn_type": "eachlabs", "host": "{sim.base_url}", "password": "{API_KEY}"}}',
    )
    one_off = EachlabsHook("notebook").create_prediction("echo-test", {"text": "from a notebook"})
    deadline, panel = time.monotonic() + 90, ""
    while time.monotonic() < deadline:  # the first view starts the listing; one a minute is kept
        page = plugin(stack, "/").text
        panel = page.split('id="reconciliation"', 1)[-1].split("</table>", 1)[0]
        if one_off in panel:
            break
        time.sleep(3)
    assert one_off in panel, panel
    row = next(r for r in panel.split("<tr>") if ">eachlabs_default<" in r)
    cells = re.findall(r'<td class="num">([^<]+)<', row)
    recorded, listed = int(cells[0]), int(cells[1])
    # The API's side is the simulator's own history for the key (the suite points eachlabs_default at
    # other simulators too, so the recorded side also counts predictions this one never saw).
    assert listed == len([p for p in sim.predictions.values() if p.api_key == API_KEY]) and recorded > 0
    assert succeeded[1]["prediction_id"] not in panel  # a DAG's prediction is recorded
    # A user who cannot read every DAG is not shown the key's whole history.
    assert 'id="reconciliation"' not in plugin(stack, "/", token="outsider").text


def test_a_fill_marked_failed_while_deferred_is_settled_by_the_apis_history(dags_ready: AirflowStack) -> None:
    """Its task never saw the end (the triggerer cancelled the prediction), so the ledger holds it as
    open; the panel adds what the API billed for it to the DAGs' spend."""
    from tests.e2e.test_real_airflow import _airflow_calls_trigger_on_kill

    if not _airflow_calls_trigger_on_kill():
        pytest.skip("Airflow 3.2 lets the prediction run to its end")
    stack = dags_ready
    sim = stack.slow_sim  # 20 s predictions: the mark lands mid-wait
    stack.use_simulator(sim)
    try:
        cancels = sim.counters.cancels
        run_id = trigger_until_deferred(stack, "eachlabs_webhook_fill")
        prediction_id = stack.api.xcom("eachlabs_webhook_fill", run_id, "fill", "prediction_id")
        stack.api.request(
            "PATCH",
            f"/dags/eachlabs_webhook_fill/dagRuns/{run_id}/taskInstances/fill",
            json={"new_state": "failed"},
        )
        deadline = time.monotonic() + 60
        while sim.counters.cancels == cancels and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sim.predictions[prediction_id].status == "cancelled"
        deadline, row = time.monotonic() + 100, ""
        while time.monotonic() < deadline:  # one listing a minute per connection and period is kept
            panel = plugin(stack, "/").text.split('id="reconciliation"', 1)[-1].split("</table>", 1)[0]
            row = next((r for r in panel.split("<tr>") if ">eachlabs_default<" in r), "")
            if "settled by the API" in row:
                break
            time.sleep(5)
        assert re.search(r"for (\d+) open, settled by the API", row), row
    finally:
        stack.use_simulator(stack.fast_sim)
