"""The plugin's FastAPI app, mounted by the api-server at ``/eachlabs``: the task page, its images,
its live status, and the overview of every fill. Only the api-server imports this module (through
the plugin's lazy ``fastapi_apps``), so it imports FastAPI, Jinja2 and Airflow's API security freely.

Every route uses Airflow's own login: the task routes ask the auth manager for read access to the
task instances of the DAG in their path (``requires_access_dag``), the overview lists only the DAGs
the user may read. Pages are addressed by dag, run, task and map index; what they show comes from
what that task recorded, and what the api-server does for them (which connection, which files) from
the DAG (``authority.py``). The API key stays here: the live status is fetched by the api-server,
and no page, image or answer carries it. Every answer carries a Content-Security-Policy that lets
only this page's own scripts run, and may be framed only by Airflow's own pages.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from airflow_provider_eachlabs.links import task_tab_path
from airflow_provider_eachlabs.plugin.advice import advice
from airflow_provider_eachlabs.plugin.batches import BatchResults, batch_results, batch_row
from airflow_provider_eachlabs.plugin.images import (
    KINDS,
    Picture,
    Unavailable,
    batch_picture,
    missing_thumbnail,
    picture,
    unrecorded,
)
from airflow_provider_eachlabs.plugin.live import live_status
from airflow_provider_eachlabs.plugin.records import (
    Row,
    TaskView,
    Waiting,
    has_ledger,
    overview,
    reconciliation,
    task_view,
)

TEMPLATES = Path(__file__).parent / "templates"
NOTHING = "\u2013"  # an en dash, where a figure is not known
OVERVIEW_ROWS = 200
THUMBNAILS = 24
# How long the fills page waits for the API's history before it answers (the listing goes on, and
# the next view within a minute shows it).
RECONCILE_WAIT = 0.5
OK_STATUSES = frozenset({"success", "succeeded"})
BAD_STATUSES = frozenset({"failed", "error", "cancelled", "canceled", "timeout"})


# Scripts run only with the nonce of their own answer; styles are inline in the templates; images
# come from this app (a missing thumbnail is an SVG it draws); only Airflow's pages may frame it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'"
)


def template_environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.globals.update(money=_money, seconds=_seconds, percent=_percent)
    return env


def create_app() -> FastAPI:
    app = FastAPI(title="Eachlabs", docs_url=None, redoc_url=None, openapi_url=None)
    env = template_environment()

    @app.middleware("http")
    async def hardened(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request.state.nonce = secrets.token_urlsafe(16)
        answer = await call_next(request)
        answer.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.format(nonce=request.state.nonce)
        answer.headers["X-Content-Type-Options"] = "nosniff"
        answer.headers["X-Frame-Options"] = "SAMEORIGIN"
        answer.headers["Referrer-Policy"] = "same-origin"
        return answer

    can_read_task = [Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))]

    def view_or_404(session: Any, dag_id: str, run_id: str, task_id: str, map_index: str | None) -> TaskView:
        view = task_view(session, dag_id, run_id, task_id, _map_index(map_index))
        if view is None:
            raise HTTPException(404, "No such task instance")
        return view

    @app.get("/ti/{dag_id}/{run_id}/{task_id}", dependencies=can_read_task, response_class=HTMLResponse)
    def task_page(
        request: Request,
        session: SessionDep,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: str | None = None,
    ) -> HTMLResponse:
        view = view_or_404(session, dag_id, run_id, task_id, map_index)
        root = request.scope.get("root_path", "")
        base = f"{root}/ti/{_path(dag_id, run_id, task_id)}"
        ui_base = root[: -len("/eachlabs")] if root.endswith("/eachlabs") else ""
        page = render_task_page(env, view, base, request.state.nonce, ui_base)
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/ti/{dag_id}/{run_id}/{task_id}/status", dependencies=can_read_task)
    def task_status(
        session: SessionDep, dag_id: str, run_id: str, task_id: str, map_index: str | None = None
    ) -> JSONResponse:
        """The prediction's status as the API reports it now, for a page whose task still waits."""
        view = view_or_404(session, dag_id, run_id, task_id, map_index)
        answer: dict[str, Any] = {"task_state": view.state, "elapsed": _duration(view)}
        if view.prediction_id and view.waiting and view.authority.conn_id:
            answer.update(live_status(view.authority.conn_id, view.prediction_id, _badge))
        else:
            status = _shown_status(view)
            answer.update(status=status, badge=_badge(status))
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    @app.get("/ti/{dag_id}/{run_id}/{task_id}/image/{kind}", dependencies=can_read_task)
    def task_image(
        session: SessionDep,
        dag_id: str,
        run_id: str,
        task_id: str,
        kind: str,
        map_index: str | None = None,
        thumb: bool = False,
    ) -> Response:
        if kind not in KINDS:
            raise HTTPException(404, f"no image called {kind!r}: one of {', '.join(KINDS)}")
        view = view_or_404(session, dag_id, run_id, task_id, map_index)
        return image_answer(lambda: picture(view, kind, thumbnail=thumb), thumb)

    @app.get("/ti/{dag_id}/{run_id}/{task_id}/batch/{key}", dependencies=can_read_task)
    def batch_image(
        session: SessionDep,
        dag_id: str,
        run_id: str,
        task_id: str,
        key: str,
        map_index: str | None = None,
        thumb: bool = False,
    ) -> Response:
        """One batch item's stored output, found by its key in the batch's own results manifest."""
        view = view_or_404(session, dag_id, run_id, task_id, map_index)
        path, folder = view.authority.manifest_path, view.authority.output_path
        if not view.batch or path is None or folder is None:
            raise HTTPException(404, "this task is not a batch, or its output_path is not known here")
        return image_answer(lambda: batch_picture(view, batch_row(path, folder, key), thumbnail=thumb), thumb)

    @app.get("/", response_class=HTMLResponse)
    def overview_page(
        request: Request,
        session: SessionDep,
        user: GetUserDep,
        dag_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        status: str | None = None,
    ) -> HTMLResponse:
        readable = set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))
        filters: dict[str, Any] = {
            "dag_id": dag_id or None,
            "since": _day(since),
            "until": _day(until),
            "status": status or None,
        }
        found = overview(session, readable, limit=OVERVIEW_ROWS, **filters)
        reconciled = (
            reconciliation(session, filters["since"], filters["until"], wait=RECONCILE_WAIT)
            if has_ledger() and _reads_every_dag(session, readable)
            else None
        )
        root = request.scope.get("root_path", "")
        ui_base = root[: -len("/eachlabs")] if root.endswith("/eachlabs") else ""

        thumbnailed: set[tuple[str, str, str, int]] = set()

        def thumb_url(row: Row) -> str | None:
            """A thumbnail of the task's stored output, on the newest row of each task instance (its
            earlier tries' rows would show the same picture) and the newest ``THUMBNAILS`` rows only:
            each is read by the api-server, so a page of a few hundred rows costs a few reads."""
            instance = (row.dag_id, row.run_id, row.task_id, row.map_index)
            if not row.succeeded or row.is_batch or instance in thumbnailed or len(thumbnailed) >= THUMBNAILS:
                return None
            thumbnailed.add(instance)
            where = _path(row.dag_id, row.run_id, row.task_id)
            return f"{root}/ti/{where}/image/after?map_index={row.map_index}&thumb=true"

        def tab_url(row: Row | Waiting) -> str:
            return task_tab_path(row.dag_id, row.run_id, row.task_id, row.map_index, ui_base or "/")

        page = env.get_template("overview.html").render(
            nonce=request.state.nonce,
            overview=found,
            reconciled=reconciled,
            filters=filters,
            limit=OVERVIEW_ROWS,
            thumb_url=thumb_url,
            tab_url=tab_url,
            review_url=tab_url,
        )
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    return app


def _reads_every_dag(session: Any, readable: set[str]) -> bool:
    """Whether the user may read every DAG: the API's history of a key covers all the DAGs that use
    it, so only such a user is shown it (another team's predictions are not this user's to see)."""
    from airflow.models.dag import DagModel
    from sqlalchemy import select

    return set(session.scalars(select(DagModel.dag_id))) <= readable


def render_task_page(env: Environment, view: TaskView, base: str, nonce: str, ui_base: str = "") -> str:
    """A task's tab: one fill with its images and tries, or a batch's counts and outputs."""
    query = f"map_index={view.map_index}"
    if view.batch:
        return _batch_page(env, view, base, query, nonce, ui_base)
    status = _shown_status(view)
    return env.get_template("task.html").render(
        nonce=nonce,
        review=_review_form(view, ui_base),
        view=view,
        status=status,
        badge=_badge(status),
        duration=_duration(view),
        failure=_failure(view),
        stored_at=_stored_at(view),
        parameters=_parameters(view.input),
        has_history=len(view.attempts) > 1 or _has_task_state_store(),
        status_url=f"{base}/status?{query}",
        image_url=lambda kind: f"{base}/image/{kind}?{query}&try={view.try_number}",
        unrecorded=lambda kind: unrecorded(view, kind),
    )


def image_answer(load: Callable[[], Picture], thumb: bool) -> Response:
    """An image, or why it cannot be shown: as text for the full-size link, as a drawn "no image"
    for a thumbnail (so a page of them shows no broken image and logs no console error)."""
    from airflow_provider_eachlabs.plugin.files import Refused

    try:
        found = load()
    except (Unavailable, Refused, ValueError) as why:
        if not thumb:
            return PlainTextResponse(str(why), status_code=404)
        # Not kept by the browser: the output may be readable again on the next view.
        missing = missing_thumbnail(str(why))
        return Response(
            missing.content, media_type=missing.content_type, headers={"Cache-Control": "no-store"}
        )
    return Response(
        found.content, media_type=found.content_type, headers={"Cache-Control": "private, max-age=300"}
    )


def _batch_page(
    env: Environment, view: TaskView, base: str, query: str, nonce: str, ui_base: str = ""
) -> str:
    """A batch task's tab: its counts and spend, a grid of its newest outputs, and what failed; while
    it waits for a review, its staged outputs with the review's form."""
    path, folder = view.authority.manifest_path, view.authority.output_path
    problem = None
    results = BatchResults()
    if path is None or folder is None:
        problem = (
            f"the results cannot be read here: {view.authority.unknown or 'the batch has no output_path'}"
        )
    else:
        try:
            results = batch_results(path, folder)
        except ValueError as error:  # refused by the path rules, or too large to read
            problem = str(error)
        except OSError as error:
            problem = f"{path} cannot be read here ({type(error).__name__})"
    total = view.batch.get("items")
    return env.get_template("batch.html").render(
        nonce=nonce,
        view=view,
        results=results,
        problem=problem,
        manifest=path,
        total=total if isinstance(total, int) and not isinstance(total, bool) else None,
        newest=results.newest,
        failures=results.failures,
        thumb_url=lambda key: f"{base}/batch/{quote(str(key), safe='')}?{query}&thumb=true",
        image_url=lambda key: f"{base}/batch/{quote(str(key), safe='')}?{query}",
        advice=advice,
        review=_review_form(view, ui_base) if results.pending else None,
    )


def _map_index(raw: str | None) -> int:
    """The UI leaves ``{MAP_INDEX}`` unfilled for a task that is not mapped: that is -1."""
    try:
        return int(raw) if raw is not None else -1
    except ValueError:
        return -1


def _path(dag_id: str, run_id: str, task_id: str) -> str:
    return "/".join(quote(part, safe="") for part in (dag_id, run_id, task_id))


def _day(raw: str | None) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def _has_task_state_store() -> bool:
    try:
        import airflow.models.task_state_store  # noqa: F401
    except ImportError:
        return False
    return True


def _review_form(view: TaskView, ui_base: str) -> dict[str, Any] | None:
    """The review's form while the task waits for it: the fields a re-fill may change, as sent, and
    where Airflow's HITL REST API takes the answer (the browser's own Airflow login sends it)."""
    from airflow_provider_eachlabs.review import CHANGEABLE

    # Airflow 3.3 parks a review in awaiting_input; 3.2 defers it to a HITLTrigger.
    if view.state not in ("awaiting_input", "deferred") or view.outcome.get("status") != "awaiting review":
        return None
    problem = view.outcome.get("review_problem")
    where = "/".join(quote(part, safe="") for part in (view.dag_id, view.run_id, view.task_id))
    dag, run, task = where.split("/")
    kinds = {name: kinds[-1] for name, kinds in CHANGEABLE.items() if name in view.input}
    return {
        "round": view.outcome.get("review_round") or 1,
        "max_rounds": view.outcome.get("max_review_rounds") or "?",
        "fields": {name: view.input.get(name) for name in kinds},
        "kinds": kinds,
        "url": f"{ui_base}/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/{view.map_index}/hitlDetails",
        "required_actions": f"{ui_base}/required_actions",
        "problem": str(problem) if problem else None,
    }


def _shown_status(view: TaskView) -> str:
    """How the prediction ended (from the task's outcome), else what the task is doing."""
    if view.outcome.get("status"):
        return str(view.outcome["status"])
    if view.result.get("status"):
        return str(view.result["status"])
    return {"deferred": "waiting", "running": "running", "failed": "task failed"}.get(
        view.state or "", view.state or "unknown"
    )


def _badge(status: str) -> str:
    return (
        "ok"
        if status in OK_STATUSES
        else "bad"
        if status in BAD_STATUSES or status == "task failed"
        else "wait"
    )


def _duration(view: TaskView) -> str:
    predict_time = view.outcome.get("predict_time") or view.result.get("predict_time")
    if isinstance(predict_time, (int, float)):
        return f"ran {predict_time:.1f} s"
    if view.started is None:
        return "not started"
    end = view.ended or datetime.now(timezone.utc)
    verb = "waiting for" if view.waiting else "took"
    return f"{verb} {(end - view.started).total_seconds():.0f} s"


def _stored_at(view: TaskView) -> str:
    """Where the output is, or will be: a running fill names the place its DAG gave it."""
    if view.stored_path:
        return view.stored_path
    place = view.authority.output_path
    if place is None:
        return "not stored (no output_path)"
    if view.waiting:
        return f"will be stored {'in' if place.endswith('/') else 'at'} {place}"
    return f"nothing stored in {place}" if place.endswith("/") else f"nothing stored at {place}"


# Ends a person or the user's own limit decided, not a failure of the prediction.
_DECIDED_HEADLINES = {
    "ReviewRejected": "The fill was rejected in review",
    "ReviewRoundsExhausted": "The review's re-fills ran out",
    "EachlabsBudgetError": "The task's budget (max_cost) stopped it",
}


def _failure(view: TaskView) -> dict[str, Any] | None:
    outcome = view.outcome
    if not outcome or outcome.get("ok", True) or outcome.get("status") == "awaiting review":
        return None
    status = str(outcome.get("status") or "error")
    code = outcome.get("error_code")
    headline = _DECIDED_HEADLINES.get(str(outcome.get("error_class"))) or {
        "failed": "The prediction failed" + (f" ({code})" if code else ""),
        "cancelled": "The prediction was cancelled",
        "timeout": "The prediction did not finish in time",
    }.get(
        status,
        f"The task failed ({outcome.get('error_class') or 'error'})"
        if view.prediction_id
        else f"The task failed before buying a prediction ({outcome.get('error_class') or 'error'})",
    )
    return {
        "headline": headline,
        "message": outcome.get("error_message") or "",
        "request_id": outcome.get("request_id"),
        "advice": advice(outcome),
    }


_PARAMETER_ORDER = (
    "prompt",
    "seed",
    "steps",
    "guidance",
    "safety_tolerance",
    "output_format",
    "prompt_upsampling",
)


def _parameters(sent: dict[str, Any]) -> list[tuple[str, str]]:
    """The parameters as sent, the model page's first, files (shown as images) left out."""
    names = [n for n in _PARAMETER_ORDER if n in sent] + sorted(n for n in sent if n not in _PARAMETER_ORDER)
    return [(name, _text(sent[name])) for name in names if name not in ("image", "mask")]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _money(value: Any) -> str:
    return f"${value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else NOTHING


def _seconds(value: Any) -> str:
    return f"{value:.1f} s" if isinstance(value, (int, float)) and not isinstance(value, bool) else NOTHING


def _percent(value: Any) -> str:
    return f"{value * 100:.0f} %" if isinstance(value, (int, float)) else NOTHING
