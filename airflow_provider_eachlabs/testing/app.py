"""The HTTP routes of the simulated Eachlabs API, shaped as the official openapi.json says.

Handlers take the raw Request and build JSON by hand: FastAPI's own body validation would answer
422 in its own format, while Eachlabs answers 400 with its Error schema. Heavy work (image
decoding and the fill) runs in a thread pool so polling stays fast while a fill is computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from airflow_provider_eachlabs.testing.faults import FaultQueue
from airflow_provider_eachlabs.testing.models import MODELS, ValidationFailure, validate_input
from airflow_provider_eachlabs.testing.state import LimitExceeded, PredictionRecord, SimState, iso

__all__ = ["CONTENT_TYPES", "Engine", "build_app"]

UPLOAD_URL_LIFETIME = 15 * 60
DEFAULT_RETENTION = 180 * 24 * 3600
MIN_RETENTION, MAX_RETENTION = 60, 31_536_000

CONTENT_TYPES: dict[str, str] = {
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/ogg": "ogg",
    "audio/webm": "weba",
    "audio/mp4": "m4a",
}
OUTPUT_CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png"}
FILE_TYPES = ("image", "video", "audio", "other")
EXECUTION_STATUS_TOKENS = {
    "created": {"created"},
    "starting": {"starting", "processing"},
    "success": {"success"},
    "error": {"error", "failed"},
}


def error(
    status: int, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"error": message, "status": status}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class Engine:
    """Shared context of the routes: configuration, state, and the prediction workers."""

    state: SimState
    faults: FaultQueue
    executor: Executor
    reject_word: str | None
    base_url: str = ""
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def key_of(self, request: Request) -> str | None:
        """The accepted key presented by either documented auth header, else None."""
        key = request.headers.get("x-api-key")
        if key is not None and key in self.state.api_keys:
            return key
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token in self.state.api_keys:
            return token
        return None

    # -- prediction work -------------------------------------------------------------------------

    def _fetch(self, url: str) -> bytes:
        """Files the simulator serves itself are read from memory; anything else is unreachable."""
        prefix = self.base_url + "/files/"
        if url.startswith(prefix):
            stored = self.state.files.get(url[len(prefix) :].split("?", 1)[0])
            if stored is None:
                raise LookupError(f"{url} answered 404")
            return stored.data
        raise LookupError(f"{url} is not reachable from the simulator (it has no internet access)")

    async def work(self, rec: PredictionRecord, fail: tuple[str, str] | None) -> None:
        """Compute the outcome now; the record only reports it once its deadline has passed."""
        try:
            await self._work(rec, fail)
        except Exception as exc:  # a bug here must surface as a failed prediction, not a hang
            self._set_failed(rec, "INTERNAL_ERROR", f"simulator error: {exc!r}")

    def _set_failed(self, rec: PredictionRecord, code: str, message: str) -> None:
        rec.output = {"error_code": code, "error_message": message}
        rec.logs = f"{code}: {message}"
        rec.outcome = "failed"

    async def _work(self, rec: PredictionRecord, fail: tuple[str, str] | None) -> None:
        prompt = rec.input.get("prompt")
        if fail is not None:
            self._set_failed(rec, *fail)
        elif self.reject_word and isinstance(prompt, str) and self.reject_word.lower() in prompt.lower():
            self._set_failed(rec, "PROVIDER_REJECTED", "The provider rejected the prompt (content policy).")
        elif rec.model == "flux-fill-pro":
            await self._fill(rec)
        elif rec.model in ("upscale-image", "describe-image"):
            await self._image_model(rec)
        else:
            rec.output = dict(rec.input)
            rec.logs = "echo-test: returned the input unchanged"
            rec.outcome = "success"
        if rec.final_word in ("error", "failed") and rec.outcome == "success":
            self._set_failed(rec, "PREDICTION_FAILED", "The prediction failed (scripted by the test).")
        elif rec.final_word in ("canceled", "cancelled"):
            rec.output = None

    async def _fill(self, rec: PredictionRecord) -> None:
        from airflow_provider_eachlabs.testing.fill import FillError, fill_image

        try:
            image = self._fetch(rec.input["image"])
            mask = self._fetch(rec.input["mask"]) if "mask" in rec.input else None
        except LookupError as exc:
            self._set_failed(rec, "INPUT_FETCH_FAILED", f"Could not download an input file: {exc}")
            return
        fmt = rec.input.get("output_format", "jpg")
        seed = rec.input.get("seed")
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(
                self.executor,
                lambda: fill_image(image, mask, output_format=fmt, seed=None if seed is None else int(seed)),
            )
        except FillError as exc:
            self._set_failed(rec, "INVALID_INPUT", str(exc))
            return
        from airflow_provider_eachlabs.testing.state import StoredFile

        path = f"outputs/{rec.id}.{fmt}"
        self.state.files[path] = StoredFile(OUTPUT_CONTENT_TYPES[fmt], data)
        rec.output = f"{self.base_url}/files/{path}"
        rec.logs = f"flux-fill-pro (simulated): filled the masked region, {len(data)} bytes of {fmt}"
        rec.outcome = "success"

    async def _image_model(self, rec: PredictionRecord) -> None:
        """upscale-image (a PNG, scaled up) and describe-image (an object with text), with Pillow."""
        from airflow_provider_eachlabs.testing.image_models import describe_image, upscale_image
        from airflow_provider_eachlabs.testing.state import StoredFile

        try:
            image = self._fetch(rec.input["image"])
        except LookupError as exc:
            self._set_failed(rec, "INPUT_FETCH_FAILED", f"Could not download an input file: {exc}")
            return
        loop = asyncio.get_running_loop()
        if rec.model == "describe-image":
            words = int(rec.input.get("max_words", 20))
            rec.output = await loop.run_in_executor(self.executor, describe_image, image, words)
            rec.logs = "describe-image (simulated): described the image"
        else:
            scale = int(rec.input.get("scale", 2))
            data = await loop.run_in_executor(self.executor, upscale_image, image, scale)
            rec.output = []
            for variant in range(int(rec.input.get("num_outputs", 1))):
                path = f"outputs/{rec.id}-{variant}.png"
                self.state.files[path] = StoredFile("image/png", data)
                rec.output.append(f"{self.base_url}/files/{path}")
            rec.logs = f"upscale-image (simulated): scaled by {scale}"
        rec.outcome = "success"

    async def settle(self, rec: PredictionRecord) -> None:
        """Past its deadline a prediction must report a terminal status; wait for its worker."""
        task = self.tasks.get(rec.id)
        if task is not None and rec.phase() == "finishing":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=30)

    # -- shapes ----------------------------------------------------------------------------------

    def prediction_body(self, rec: PredictionRecord) -> dict[str, Any]:
        now = time.monotonic()
        body: dict[str, Any] = {
            "id": rec.id,
            "model": rec.model,
            "input": rec.input,
            "status": rec.reported_status(now),
            "logs": rec.logs if rec.is_terminal(now) else None,
            "metrics": {"predict_time": rec.run_time(now), "cost": rec.cost},
            "urls": {
                "get": f"{self.base_url}/v1/prediction/{rec.id}",
                "cancel": f"{self.base_url}/v1/prediction/{rec.id}/cancel",
            },
        }
        if rec.phase(now) in ("success", "failed") and rec.output is not None:
            body["output"] = rec.output
        return body


async def _json_object(request: Request) -> dict[str, Any] | JSONResponse:
    raw = await request.body()
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        return error(400, "invalid request body: not JSON", {"reason": str(exc)})
    if not isinstance(body, dict):
        return error(400, "invalid request body: expected a JSON object")
    return body


def _forget(engine: Engine, prediction_id: str) -> Callable[[asyncio.Task[None]], None]:
    def done(_task: asyncio.Task[None]) -> None:
        engine.tasks.pop(prediction_id, None)

    return done


def _unauthorized() -> JSONResponse:
    return error(401, "Invalid or missing API key")


def build_app(engine: Engine) -> FastAPI:
    state = engine.state
    app = FastAPI(
        title="Eachlabs simulator", docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False
    )

    async def authorized_body(request: Request) -> tuple[str, dict[str, Any]] | JSONResponse:
        """The caller's key and JSON object body, or the 401 / 400 answer."""
        key = engine.key_of(request)
        if key is None:
            return _unauthorized()
        body = await _json_object(request)
        return body if isinstance(body, JSONResponse) else (key, body)

    def own_prediction(request: Request, prediction_id: str) -> PredictionRecord | JSONResponse:
        """The caller's prediction, or the 401 / 404 answer: another key's prediction is not found."""
        key = engine.key_of(request)
        if key is None:
            return _unauthorized()
        rec = state.predictions.get(prediction_id)
        if rec is None or rec.api_key != key:
            return JSONResponse({"error": "Prediction not found"}, status_code=404)
        return rec

    async def create(request: Request) -> Response:
        authorized = await authorized_body(request)
        if isinstance(authorized, JSONResponse):
            return authorized
        key, body = authorized
        model, inp = body.get("model"), body.get("input")
        if not isinstance(model, str) or not model:
            return error(400, "model is required and must be a string", {"field": "model"})
        if not isinstance(inp, dict):
            return error(400, "input is required and must be an object", {"field": "input"})
        for name in ("webhook_url", "webhook_secret"):
            if name in body and not isinstance(body[name], str):
                return error(400, f"{name} must be a string", {"field": name})
        if model not in MODELS:
            return error(404, f"Model not found: {model}", {"field": "model"})
        try:
            validate_input(model, inp, engine.base_url, mask_required=state.mask_required)
        except ValidationFailure as exc:
            return error(
                400,
                f"Invalid input: {exc}",
                {"field": exc.field, "path": f"input.{exc.field}", "reason": exc.reason},
            )
        rec = PredictionRecord(
            id=str(uuid.uuid4()),
            model=model,
            input=inp,
            api_key=key,
            created_at=time.time(),
            predict_seconds=state.predict_seconds,
            cost=state.cost_per_prediction,
            webhook_url=body.get("webhook_url"),
            webhook_secret=body.get("webhook_secret"),
        )
        try:
            state.check_and_register(rec)
        except LimitExceeded as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
            return error(exc.status, exc.message, headers=headers)
        fail: tuple[str, str] | None = None
        for fault in engine.faults.take_outcomes():
            if fault.kind == "never_finish":
                rec.never_finish = True
            elif fault.kind == "status_variant":
                rec.running_word = fault.params.get("running", rec.running_word)
                rec.final_word = fault.params.get("final", rec.final_word)
            elif fault.kind == "fail":
                fail = (
                    str(fault.params.get("error_code", "PREDICTION_FAILED")),
                    str(fault.params.get("error_message", "The prediction failed (scripted by the test).")),
                )
        task = asyncio.create_task(engine.work(rec, fail))
        engine.tasks[rec.id] = task
        task.add_done_callback(_forget(engine, rec.id))
        return JSONResponse(
            {"status": "success", "message": "Prediction created successfully", "predictionID": rec.id}
        )

    app.add_api_route("/v1/prediction", create, methods=["POST"])
    app.add_api_route("/v1/prediction/", create, methods=["POST"], include_in_schema=False)

    @app.get("/v1/prediction/{prediction_id}")
    async def get_prediction(prediction_id: str, request: Request) -> Response:
        rec = own_prediction(request, prediction_id)
        if isinstance(rec, JSONResponse):
            return rec
        await engine.settle(rec)
        return JSONResponse(engine.prediction_body(rec))

    @app.post("/v1/prediction/{prediction_id}/cancel")
    async def cancel_prediction(prediction_id: str, request: Request) -> Response:
        """Cancel a running prediction. Cancelling one that already ended answers 409 Conflict:
        the spec lists no status for it, and 409 is what Eachlabs uses for state conflicts."""
        rec = own_prediction(request, prediction_id)
        if isinstance(rec, JSONResponse):
            return rec
        with state.lock:
            if rec.is_terminal():
                return error(409, f"Prediction already finished with status {rec.reported_status()}")
            rec.cancelled_at = time.monotonic()
        return JSONResponse(
            {"status": "cancelled", "message": "Prediction canceled successfully", "predictionID": rec.id}
        )

    @app.post("/v1/upload/presign")
    async def presign(request: Request) -> Response:
        authorized = await authorized_body(request)
        if isinstance(authorized, JSONResponse):
            return authorized
        key, body = authorized
        content_type = body.get("content_type")
        if not isinstance(content_type, str) or not content_type:
            return error(400, "content_type is required", {"field": "content_type"})
        ext = CONTENT_TYPES.get(content_type.lower())
        if ext is None:
            return error(
                400,
                f"Unsupported content_type: {content_type}",
                {"field": "content_type", "allowed": sorted(CONTENT_TYPES)},
            )
        file_type = body.get("file_type")
        if file_type is not None and file_type not in FILE_TYPES:
            return error(400, f"file_type must be one of {list(FILE_TYPES)}", {"field": "file_type"})
        retention = body.get("expires_in_seconds", DEFAULT_RETENTION)
        if not isinstance(retention, int) or isinstance(retention, bool):
            return error(400, "expires_in_seconds must be an integer", {"field": "expires_in_seconds"})
        retention = min(MAX_RETENTION, max(MIN_RETENTION, retention))
        upload_id = str(uuid.uuid4())
        signature = secrets.token_hex(16)
        from airflow_provider_eachlabs.testing.state import Upload

        now = time.time()
        state.uploads[upload_id] = Upload(
            id=upload_id,
            content_type=content_type.lower(),
            ext=ext,
            signature=signature,
            api_key=key,
            upload_deadline=time.monotonic() + UPLOAD_URL_LIFETIME,
            expires_at=now + retention,
        )
        return JSONResponse(
            {
                "id": upload_id,
                "presigned_url": f"{engine.base_url}/uploads/{upload_id}?X-Amz-Signature={signature}"
                f"&X-Amz-Expires={UPLOAD_URL_LIFETIME}",
                "public_url": f"{engine.base_url}/files/uploads/{upload_id}.{ext}",
                "expires_at": iso(now + retention),
                "required_headers": {"Content-Type": content_type.lower(), "x-amz-meta-file-id": upload_id},
            }
        )

    @app.put("/uploads/{upload_id}")
    async def put_upload(upload_id: str, request: Request) -> Response:
        """The presigned PUT, checked like S3 checks one: signature, deadline, signed headers."""
        up = state.uploads.get(upload_id)
        if up is None:
            return error(404, "NoSuchUpload: unknown upload id")
        given = request.query_params.get("X-Amz-Signature", "")
        if not hmac.compare_digest(given.encode(), up.signature.encode()):
            return error(403, "SignatureDoesNotMatch: the presigned URL signature is wrong")
        if time.monotonic() > up.upload_deadline:
            return error(403, "AccessDenied: the presigned URL has expired (15 minutes)")
        if request.headers.get("x-amz-meta-file-id") != up.id:
            return error(403, "AccessDenied: required header x-amz-meta-file-id missing or wrong")
        sent_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if sent_type != up.content_type:
            return error(
                403, f"AccessDenied: Content-Type must be {up.content_type} (got {sent_type or 'none'})"
            )
        data = await request.body()
        from airflow_provider_eachlabs.testing.state import StoredFile

        state.files[f"uploads/{up.id}.{up.ext}"] = StoredFile(up.content_type, data)
        return Response(status_code=200, headers={"ETag": '"' + hashlib.md5(data).hexdigest() + '"'})

    @app.api_route("/files/{path:path}", methods=["GET", "HEAD"])
    async def get_file(path: str) -> Response:
        stored = state.files.get(path)
        if stored is None:
            return error(404, "File not found")
        return Response(stored.data, media_type=stored.content_type)

    @app.get("/v1/model")
    async def get_model(request: Request) -> Response:
        slug = request.query_params.get("slug")
        if not slug:
            return error(400, "slug parameter is required", {"field": "slug"})
        spec = MODELS.get(slug)
        if spec is None:
            return error(404, "Failed to fetch model: model not found")
        return JSONResponse(
            {
                "title": spec.title,
                "slug": spec.slug,
                "version": "0.0.1",
                "output_type": spec.output_type,
                "request_schema": spec.request_schema,
            }
        )

    def _rfc3339(raw: str) -> float | None:
        """Epoch seconds of an RFC 3339 date-time (an offset or Z required), or None."""
        import re
        from datetime import datetime

        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", raw):
            return None
        text = raw.upper().replace("Z", "+00:00")
        head, dot, rest = text.partition(".")
        if dot:  # Python reads at most microseconds: cut the fraction to six digits
            digits = len(rest) - len(rest.lstrip("0123456789"))
            text = head + "." + rest[:digits][:6].ljust(6, "0") + rest[digits:]
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            return None

    @app.get("/v1/executions")
    async def list_executions(request: Request) -> Response:
        key = engine.key_of(request)
        if key is None:
            return _unauthorized()
        params = request.query_params
        try:
            limit = int(params.get("limit", "20"))
            offset = int(params.get("offset", "0"))
        except ValueError:
            return error(400, "limit and offset must be integers")
        if not 1 <= limit <= 100 or offset < 0:
            return error(400, "limit must be 1..100 and offset >= 0")
        tokens = [t.strip() for t in params.get("status", "").split(",") if t.strip()]
        bad = [t for t in tokens if t not in EXECUTION_STATUS_TOKENS]
        if bad:
            return error(400, f"invalid status {bad[0]!r}; allowed: {sorted(EXECUTION_STATUS_TOKENS)}")
        wanted: set[str] = set().union(*(EXECUTION_STATUS_TOKENS[t] for t in tokens)) if tokens else set()
        # The creation window, as the spec has it: RFC 3339 bounds, both inclusive; without `from`,
        # the 90 days before `to` (or before now).
        window: dict[str, float] = {}
        for name in ("from", "to"):
            raw = params.get(name)
            if raw is None:
                continue
            moment = _rfc3339(raw)
            if moment is None:
                return error(
                    400,
                    f"invalid {name!r}: {raw[:64]!r} is not an RFC 3339 date-time "
                    "(e.g. 2026-01-01T00:00:00Z)",
                    {"field": name},
                )
            window[name] = moment
        until = window.get("to", time.time())
        since = window.get("from", until - 90 * 86400.0)
        if since > until:
            return error(400, "invalid window: 'from' is after 'to'", {"field": "from"})
        model = params.get("model")
        matching = []
        for rec in sorted(state.predictions.values(), key=lambda r: r.created_at, reverse=True):
            if rec.api_key != key or (model and rec.model != model):
                continue
            if not since <= rec.created_at <= until:
                continue
            status = rec.reported_status()
            # The executions listing uses "error" for failures, as the spec documents.
            if status == "failed":
                status = "error"
            if wanted and status not in wanted:
                continue
            matching.append((rec, status))
        page = []  # only the page's rows are written out: a long history costs a sort, not its rows
        for rec, status in matching[offset : offset + limit]:
            done = rec.completed_at()
            out = rec.output if rec.is_terminal() else None
            page.append(
                {
                    "id": rec.id,
                    "model": rec.model,
                    "requested_model": None,
                    "status": status,
                    "workflow_id": None,
                    "workflow_execution_id": None,
                    "execution_cost": rec.cost,
                    "run_time": rec.run_time(),
                    "created_at": iso(rec.created_at),
                    "started_at": iso(rec.created_at),
                    "completed_at": iso(done) if done is not None else None,
                    "output": out if isinstance(out, str) else (json.dumps(out) if out is not None else None),
                }
            )
        return JSONResponse(
            {
                "executions": page,
                "total_count": len(matching),
                "total_capped": False,
                "offset": offset,
                "limit": limit,
            }
        )

    return app
