"""The FastAPI application: routes, bearer-token auth, upload limits, errors without stack traces.

Every error a client can cause is a 4xx JSON body ``{"error": <code>, "detail": <why>}``;
an unexpected failure is logged here with its traceback and answered 500 ``internal_error``
with no details. Blocking work (inference, image decoding, JPEG encoding, waiting for a
camera frame) runs in the thread pool, never on the event loop.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent import __version__
from agent.http.docs_page import render_docs
from agent.http.images import ACCEPTED_TYPES, UploadError
from agent.http.models import ErrorBody, Health, Readiness
from agent.schema import DetectionResult
from agent.sinks.mqtt.payloads import StatusMessage
from agent.telemetry import AgentStatus

if TYPE_CHECKING:
    from agent.http.server import ApiState

log = logging.getLogger(__name__)


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(error=code, detail=detail).model_dump(), status_code=status, headers=headers)


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Bad upload (truncated, undecodable, bad form).",
        401: "Missing or wrong bearer token.",
        413: "Body or image too large.",
        415: "Not JPEG or PNG.",
        422: "Bad query parameter.",
        503: "Not ready, busy, or no frame in time.",
    }.items()
}
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image: raw bytes with Content-Type image/jpeg or image/png, or a form with an `image` file.",
        "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in ACCEPTED_TYPES}
        | {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


class _BodyTooLarge(Exception):
    pass


async def _read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` (Content-Length or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_from_form(request: Request, body: bytes) -> tuple[bytes, str | None]:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=4)
    try:
        part = form.get("image")
        if not isinstance(part, UploadFile):
            raise UploadError(400, "missing_image", "the form has no `image` file field")
        return await part.read(), part.content_type
    finally:
        await form.close()


def build_app(state: ApiState) -> FastAPI:
    """The API over a running agent (``state`` holds the pipeline, the detect lane, the token)."""
    cfg = state.config
    app = FastAPI(
        title="edge-agent",
        version=__version__,
        description="The device's local API: health, Prometheus metrics, status, on-demand detection, camera snapshot.",
        docs_url=None,  # served below: public by default (no device data), behind the token with http.public_docs: false
        redoc_url=None,
        openapi_url=None,
    )
    bearer = HTTPBearer(auto_error=False, description="The token from http.token_file.")

    def require_token(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008 - FastAPI idiom
        if creds is None or creds.scheme.lower() != "bearer":
            raise _Unauthorized("send the header `Authorization: Bearer <token>` (the token is in http.token_file)")
        if not hmac.compare_digest(creds.credentials.encode(), state.token.encode()):
            raise _Unauthorized("the bearer token is wrong")

    auth = [Depends(require_token)]
    docs_auth = [] if cfg.public_docs else auth

    # ---- errors ----------------------------------------------------------------------------
    @app.exception_handler(_Unauthorized)
    async def _unauthorized(_: Request, exc: _Unauthorized) -> JSONResponse:
        return _error(401, "unauthorized", str(exc), {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(UploadError)
    async def _upload(_: Request, exc: UploadError) -> JSONResponse:
        state.count("refused")
        return _error(exc.status, exc.code, exc.detail)

    @app.exception_handler(_BodyTooLarge)
    async def _too_large(_: Request, exc: _BodyTooLarge) -> JSONResponse:
        state.count("refused")
        return _error(413, "body_too_large", f"the request body exceeds {cfg.max_upload_bytes} bytes (http.max_upload_bytes)")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return _error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("HTTP %s %s failed", request.method, request.url.path, exc_info=exc)
        state.errors += 1
        return _error(500, "internal_error", "the agent failed to answer this request; the reason is in its log")

    # ---- health (no token) ---------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, tags=["health"], summary="Liveness: the process answers")
    def healthz() -> Health:
        return Health(status="ok", version=__version__, uptime_s=time.monotonic() - state.started_monotonic)

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["health"],
        summary="Readiness: model loaded, source delivering, last frame recent",
        responses={503: {"model": Readiness, "description": "Not ready; reasons say why."}},
    )
    def readyz() -> JSONResponse:
        r = state.readiness()
        return JSONResponse(r.model_dump(), status_code=200 if r.ready else 503)

    # ---- token required --------------------------------------------------------------------------
    @app.get(
        "/metrics",
        tags=["telemetry"],
        dependencies=auth,
        summary="Prometheus metrics (the MQTT telemetry's figures)",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, 401: _ERRORS[401]},
    )
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.render_metrics(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/v1/status",
        response_model=StatusMessage | AgentStatus,  # StatusMessage when an mqtt sink runs
        tags=["telemetry"],
        dependencies=auth,
        summary="Agent, model, source and update state (the retained MQTT status)",
        responses={401: _ERRORS[401]},
    )
    def status() -> JSONResponse:
        # the MQTT sink's StatusMessage when it runs (its two transport fields included), else the same AgentStatus
        return JSONResponse(state.status().model_dump(mode="json"))

    @app.post(
        "/v1/detect",
        response_model=DetectionResult,
        tags=["inference"],
        dependencies=auth,
        summary="Run the loaded model on an uploaded JPEG/PNG",
        openapi_extra=_UPLOAD_BODY,
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "The result; with annotated=1 the image with boxes drawn."},
            **{k: v for k, v in _ERRORS.items() if k != 404},
        },
    )
    async def detect(
        request: Request,
        annotated: bool = Query(False, description="Return the image (JPEG) with boxes drawn instead of JSON."),
    ) -> Response:
        if not state.detect_slots.acquire(blocking=False):
            state.count("busy")
            return _error(
                503,
                "busy",
                f"{cfg.max_pending_detects} detect requests are already running or waiting; retry later",
                {"Retry-After": "1"},
            )
        try:
            media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
            if media not in (*ACCEPTED_TYPES, "multipart/form-data"):
                raise UploadError(
                    415,
                    "unsupported_media_type",
                    f"content type {media or '(none)'!r} is not accepted; send image/jpeg, image/png or a form with `image`",
                )
            body = await _read_capped(request, cfg.max_upload_bytes)
            data, declared = (await _image_from_form(request, body)) if media == "multipart/form-data" else (body, media)
            result, jpeg = await run_in_threadpool(state.run_detect, data, declared, annotated)
        finally:
            state.detect_slots.release()
        state.count("ok")
        if jpeg is not None:
            return Response(jpeg, media_type="image/jpeg", headers={"X-Detections": str(len(result.detections))})
        return Response(result.model_dump_json(), media_type="application/json")

    @app.get(
        "/v1/snapshot",
        tags=["inference"],
        dependencies=auth,
        summary="The next camera frame with its detections drawn (JPEG)",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 401: _ERRORS[401], 503: _ERRORS[503]},
    )
    async def snapshot() -> Response:
        shot = await run_in_threadpool(state.snapshot_jpeg)
        if shot is None:
            return _error(503, "no_frame", f"no camera frame within {cfg.snapshot_timeout_s} s: the source is not delivering")
        jpeg, result = shot
        return Response(
            jpeg,
            media_type="image/jpeg",
            headers={"X-Frame-Id": str(result.frame_id), "X-Detections": str(len(result.detections))},
        )

    # ---- docs ----------------------------------------------------------------------------------
    @app.get("/openapi.json", include_in_schema=False, dependencies=docs_auth)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=docs_auth)
    def docs() -> Response:
        return HTMLResponse(render_docs(app.openapi()))

    return app


class _Unauthorized(Exception):
    pass
