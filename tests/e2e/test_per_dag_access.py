"""Per-DAG authorization of the UI plugin in a real api-server: a Viewer who may read one DAG gets
403 on every plugin route of another DAG's task instances, 200 on her own, and the fills page lists
only the DAGs she may read.

The main e2e stack cannot tell a per-DAG check from a global one: its outsider may read no DAG at
all. Airflow 3.3's own way to give a user some DAGs and not others, with the simple auth manager
and no extra package, is multi-team mode: ``[core] multi_team``, each DAG bundle bound to a team,
and users listed as ``name:role:team``. Airflow's ``requires_access_dag`` (the plugin's guard)
looks up the team of the DAG in the request path (``DagModel.get_team_name``) and passes it to the
auth manager as ``DagDetails(id, team_name)``; ``SimpleAuthManager._is_authorized`` refuses a
non-admin whose teams do not include it, and ``get_authorized_dag_ids`` (the overview's filter)
asks the same question per team. A check that leaves the DAG out (no ``dag_id``, so no team) lets
any Viewer through, and these tests fail.

So this module starts its own small deployment (api-server, scheduler, dag-processor: the two DAGs
it runs are not deferred, so no triggerer is needed) with two bundles of one DAG file each:

* ``team-a`` (team ``team_a``): ``eachlabs_worker_death``, one fill on its worker;
* ``team-b`` (team ``team_b``): ``eachlabs_batch_kill``, a batch of twelve on its worker;

and three users: ``admin``, ``viewer_a`` (Viewer of team_a) and ``viewer_b`` (Viewer of team_b).
Each viewer is checked both ways, so every route kind is seen answering 200 to its owner (the
images to ``viewer_a``, the batch items to ``viewer_b``) and 403 to the other viewer. Processes are
started and stopped by PID with the conftest's ``ProcessManager``; teardown fails if one survives.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from airflow_provider_eachlabs.imageinfo import read_image_info
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.e2e.conftest import (
    ADMIN_USER,
    API_KEY,
    E2E_DAGS,
    E2E_ENABLED,
    LOCAL_BUNDLE,
    AirflowApi,
    AirflowStack,
    ProcessManager,
    _airflow_env,
    connection_body,
    free_port,
    migrate_database,
    require,
    wait_for,
)


@dataclass(frozen=True)
class Owned:
    """One DAG, the bundle and team it is served from, and the Viewer of that team."""

    dag_id: str
    task_id: str
    source: Path
    bundle: str
    team: str
    viewer: str
    batch: bool


SINGLE = Owned(
    dag_id="eachlabs_worker_death",
    task_id="fill",
    source=E2E_DAGS / "eachlabs_worker_death.py",
    bundle="team-a",
    team="team_a",
    viewer="viewer_a",
    batch=False,
)
BATCH = Owned(
    dag_id="eachlabs_batch_kill",
    task_id="fill_all",
    source=E2E_DAGS / "eachlabs_batch_kill.py",
    bundle="team-b",
    team="team_b",
    viewer="viewer_b",
    batch=True,
)
OWNED = (SINGLE, BATCH)
BATCH_KEY = "item_00"
IMAGE_KINDS = ("before", "mask", "after")


def other(dag: Owned) -> Owned:
    return BATCH if dag is SINGLE else SINGLE


@dataclass
class Run:
    """A finished run of one DAG and what its task recorded."""

    run_id: str
    result: dict[str, Any]

    @property
    def prediction_ids(self) -> list[str]:
        """The single fill's prediction id (a batch's are read from its results manifest)."""
        if "prediction_id" in self.result:
            return [str(self.result["prediction_id"])]
        return []


@dataclass
class TeamStack:
    airflow: AirflowStack
    runs: dict[str, Run]
    tokens: dict[str, str]
    batch_predictions: list[str]
    http: requests.Session = field(default_factory=requests.Session)

    def get(self, who: str, path: str, **params: Any) -> requests.Response:
        self.http.trust_env = False  # loopback only, whatever proxy the environment names
        return self.http.get(
            f"{self.airflow.base_url}/eachlabs{path}",
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            params=params,
            timeout=60,
        )

    def secrets_of(self, dag: Owned) -> list[str]:
        """Strings that only a reader of ``dag`` may learn: its run id and prediction ids."""
        found = [self.runs[dag.dag_id].run_id, *self.runs[dag.dag_id].prediction_ids]
        return found + (self.batch_predictions if dag.batch else [])


def ti_path(dag: Owned, run_id: str) -> str:
    return "/ti/" + "/".join(quote(part, safe="") for part in (dag.dag_id, run_id, dag.task_id))


def routes(dag: Owned, run_id: str) -> dict[str, str]:
    """Every plugin route of one task instance, by name."""
    base = ti_path(dag, run_id)
    return {
        "page": base,
        "status": f"{base}/status",
        **{f"image/{kind}": f"{base}/image/{kind}" for kind in IMAGE_KINDS},
        "batch": f"{base}/batch/{BATCH_KEY}",
    }


def _wait_up(airflow: AirflowStack) -> None:
    """The health endpoint calls the database, scheduler and dag-processor healthy (no triggerer)."""

    def healthy() -> bool:
        for managed in airflow.processes.processes:
            if not managed.alive():
                raise AssertionError(f"{managed.name} exited early:\n{managed.log_text()[-5000:]}")
        health = airflow.api.session.get(f"{airflow.base_url}/api/v2/monitor/health", timeout=5).json()
        return all(
            health.get(part, {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "dag_processor")
        )

    wait_for("api-server, scheduler and dag-processor to report healthy", healthy, timeout=180, interval=1)


def _token(airflow: AirflowStack, user: str) -> str:
    api = AirflowApi(airflow.base_url, user, airflow.password)
    api.login()
    return str(api.session.headers["Authorization"]).removeprefix("Bearer ")


@pytest.fixture(scope="module")
def teams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamStack]:
    """A multi-team deployment with one DAG per team; both DAGs run once; every process stopped."""
    require(E2E_ENABLED, "EACHLABS_E2E=0: the real-Airflow suite is switched off")
    workdir = Path(tempfile.mkdtemp(prefix="eachlabs-e2e-teams-"))
    home = workdir / "airflow-home"
    output_dir = workdir / "output"
    for folder in (home, output_dir):
        folder.mkdir()
    # One folder per bundle, holding a link to the suite's DAG file (which finds its data through
    # its resolved path, so the link works where a copy would not).
    for dag in OWNED:
        (workdir / dag.bundle).mkdir()
        (workdir / dag.bundle / dag.source.name).symlink_to(dag.source)
    password = secrets.token_urlsafe(12)
    password_file = home / "passwords.json"
    users = [ADMIN_USER, *(dag.viewer for dag in OWNED)]
    password_file.write_text(json.dumps({user: password for user in users}))
    processes = ProcessManager(log_dir=tmp_path_factory.mktemp("e2e-teams-logs"))
    sim = EachlabsSimulator(api_key=API_KEY, predict_seconds=1.0)
    failures: list[str] = []
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(sim)
            port = free_port()
            env = _airflow_env(home, f"sqlite:///{home / 'airflow.db'}", port, password_file, output_dir)
            env.update(
                {
                    "AIRFLOW__CORE__MULTI_TEAM": "True",
                    "AIRFLOW__CORE__DAGS_FOLDER": str(workdir / SINGLE.bundle),
                    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                        [
                            {
                                "name": dag.bundle,
                                "classpath": LOCAL_BUNDLE,
                                "kwargs": {"path": str(workdir / dag.bundle)},
                                "team_name": dag.team,
                            }
                            for dag in OWNED
                        ]
                    ),
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                        [f"{ADMIN_USER}:admin", *(f"{dag.viewer}:viewer:{dag.team}" for dag in OWNED)]
                    ),
                    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(processes.log_dir / "airflow-logs"),
                }
            )
            base_url = env["AIRFLOW__API__BASE_URL"]
            migrate_database(env)
            api = AirflowApi(base_url, ADMIN_USER, password)
            airflow = AirflowStack(home, env, base_url, password, api, processes, sim, sim, output_dir)
            synced = airflow.cli("teams", "sync")  # the teams the bundle config names, in the database
            assert synced.returncode == 0, f"airflow teams sync failed:\n{synced.stdout}\n{synced.stderr}"
            for name in ("api-server", "scheduler", "dag-processor"):
                airflow.start_component(name)
            _wait_up(airflow)
            api.login()
            api.request("POST", "/connections", json=connection_body(sim.base_url), expect=(201,))
            airflow.connection_host = sim.base_url

            def parsed() -> bool:
                dags = api.get("/dags", params={"limit": 100})["dags"]
                return {dag.dag_id for dag in OWNED} <= {d["dag_id"] for d in dags}

            try:
                wait_for("both teams' DAGs to be parsed", parsed, timeout=120, interval=1)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{airflow.logs()}") from None
            started = {dag.dag_id: api.trigger(dag.dag_id) for dag in OWNED}
            runs: dict[str, Run] = {}
            for dag_id, run_id in started.items():
                assert api.wait_run(dag_id, run_id, 180) == "success", airflow.logs()
                task_id = SINGLE.task_id if dag_id == SINGLE.dag_id else BATCH.task_id
                runs[dag_id] = Run(run_id, api.xcom(dag_id, run_id, task_id, "return_value"))
            batch_predictions = _batch_predictions(runs[BATCH.dag_id].result)
            tokens = {user: _token(airflow, user) for user in users}
            yield TeamStack(airflow, runs, tokens, batch_predictions)
        finally:
            leftovers = processes.stop_all()
            if leftovers:
                failures.append(f"processes still alive after teardown: {leftovers}")
    shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        pytest.fail("; ".join(failures), pytrace=False)


def _batch_predictions(summary: dict[str, Any]) -> list[str]:
    """The prediction ids of the batch's results manifest (one JSON line per item)."""
    path = summary.get("results_path")
    if not isinstance(path, str):
        return []
    found = []
    for line in Path(path).read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if row.get("prediction_id"):
            found.append(str(row["prediction_id"]))
    return found


def test_the_deployment_itself_scopes_each_viewer_to_one_dag(teams: TeamStack) -> None:
    """The premise, from Airflow's own REST API: each viewer may list exactly her team's DAG."""
    for dag in OWNED:
        listed = teams.http.get(
            f"{teams.airflow.base_url}/api/v2/dags",
            headers={"Authorization": f"Bearer {teams.tokens[dag.viewer]}"},
            timeout=60,
        )
        assert listed.status_code == 200, listed.text[:2000]
        assert [d["dag_id"] for d in listed.json()["dags"]] == [dag.dag_id]
    assert teams.batch_predictions, "the batch recorded no predictions"


@pytest.mark.parametrize("dag", OWNED, ids=lambda d: d.viewer)
def test_a_viewer_reads_every_route_of_her_own_dag(teams: TeamStack, dag: Owned) -> None:
    run = teams.runs[dag.dag_id]
    mine = routes(dag, run.run_id)
    for name, path in mine.items():
        as_viewer, as_admin = teams.get(dag.viewer, path), teams.get("admin", path)
        # What the admin is answered, the team's viewer is answered too: never 401 or 403.
        assert as_viewer.status_code == as_admin.status_code, (name, as_viewer.text[:500])
        assert as_viewer.status_code not in (401, 403), (name, as_viewer.text[:500])
    page = teams.get(dag.viewer, mine["page"])
    assert page.status_code == 200 and dag.task_id in page.text
    status = teams.get(dag.viewer, mine["status"])
    assert status.status_code == 200 and status.json()["task_state"] == "success", status.text
    if dag.batch:
        assert 'id="done">12 / 12<' in page.text, page.text[:3000]
        item = teams.get(dag.viewer, mine["batch"])
        assert item.status_code == 200 and item.headers["content-type"] == "image/png"
        assert read_image_info(item.content) is not None
        thumbnails = re.findall(r'<img loading="lazy" src="([^"]+/batch/item_\d+[^"]*)"', page.text)
        assert thumbnails, "the batch page shows no thumbnails"
    else:
        assert run.prediction_ids[0] in page.text
        for kind in IMAGE_KINDS:
            picture = teams.get(dag.viewer, mine[f"image/{kind}"])
            assert picture.status_code == 200 and picture.headers["content-type"] == "image/png", kind
            assert read_image_info(picture.content) is not None, kind
        # Past the guard: the route answers for this task, which has no batch (its wording is not
        # this test's business).
        not_batch = teams.get(dag.viewer, mine["batch"])
        assert not_batch.status_code == 404, not_batch.text


@pytest.mark.parametrize("dag", OWNED, ids=lambda d: d.viewer)
def test_a_viewer_gets_403_on_every_route_of_another_teams_dag(teams: TeamStack, dag: Owned) -> None:
    theirs = other(dag)
    hidden = teams.secrets_of(theirs)
    for name, path in routes(theirs, teams.runs[theirs.dag_id].run_id).items():
        refused = teams.get(dag.viewer, path)
        assert refused.status_code == 403, (name, refused.status_code, refused.text[:500])
        assert refused.json() == {"detail": "Forbidden"}, name
        assert not [s for s in hidden if s in refused.text], name
    # Also for a run that does not exist: the answer says nothing about what exists there.
    assert teams.get(dag.viewer, routes(theirs, "no-such-run")["page"]).status_code == 403
    # The admin is served the same routes, so the 403 is about who asks, not about the route.
    served = teams.get("admin", routes(theirs, teams.runs[theirs.dag_id].run_id)["page"])
    assert served.status_code == 200 and theirs.task_id in served.text


@pytest.mark.parametrize("dag", OWNED, ids=lambda d: d.viewer)
def test_the_fills_page_lists_only_the_viewers_dag(teams: TeamStack, dag: Owned) -> None:
    theirs = other(dag)

    def fills(page: str) -> int:
        return int(re.search(r'id="bought">(\d+)<', page).group(1))  # type: ignore[union-attr]

    everything = teams.get("admin", "/")
    assert everything.status_code == 200
    assert f">{dag.dag_id}</a>" in everything.text and f">{theirs.dag_id}</a>" in everything.text
    own_fills = fills(teams.get("admin", "/", dag_id=dag.dag_id).text)
    their_fills = fills(teams.get("admin", "/", dag_id=theirs.dag_id).text)
    assert own_fills > 0 and their_fills > 0 and fills(everything.text) == own_fills + their_fills

    page = teams.get(dag.viewer, "/")
    assert page.status_code == 200
    assert f">{dag.dag_id}</a>" in page.text and fills(page.text) == own_fills
    assert theirs.dag_id not in page.text
    assert not [s for s in teams.secrets_of(theirs) if s in page.text]
    for secret in teams.secrets_of(dag)[:1]:
        assert secret in page.text  # her own run is listed
    # Asking for the other DAG by name shows nothing of it.
    filtered = teams.get(dag.viewer, "/", dag_id=theirs.dag_id)
    assert filtered.status_code == 200 and fills(filtered.text) == 0
    assert theirs.dag_id not in filtered.text
