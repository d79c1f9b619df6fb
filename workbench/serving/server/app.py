"""The Starlette application of `workbench serve`: TF Serving's REST API, a multipart `/predict`, health, metrics.

    GET  /                                       what this server serves, and its endpoints
    GET  /healthz                                200 {"status": "ok", ...} once the model is loaded
    GET  /metrics                                Prometheus text (`metrics`)
    GET  /v1/models/<name>[/versions/<v>]        TF Serving's model status
    GET  /v1/models/<name>[/versions/<v>]/metadata  TF Serving's model metadata (the served signature)
    POST /v1/models/<name>[/versions/<v>]:predict  TF Serving's predict (`tfserving`)
    POST /predict[?top_k=5]                      multipart field `file`, or the raw image as the body; answers
                                                 `workbench predict --json`'s entry for the image

Every refusal is a 4xx `{"error": "..."}` naming the problem and the fix (TF Serving's error shape); a request
never takes the server down with it. Images go through the dynamic batcher (`batcher`), one model call at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workbench.serving.server import tfserving
from workbench.serving.server.batcher import DynamicBatcher
from workbench.serving.server.metrics import CONTENT_TYPE, Metrics
from workbench.serving.server.model import ImageInput, ServedModel
from workbench.serving.server.tfserving import RequestError

_REASON = "workbench.error_reason"  # scope key: why a request was refused, for the error counter
DEFAULT_TOP_K = 5


def create_app(
    model: ServedModel, *, max_body_bytes: int, max_batch: int = 32, max_latency: float = 0.002
) -> Starlette:
    """The application serving `model`; `max_latency` in seconds (how long a batch waits to fill)."""
    metrics = Metrics({"name": model.name, "version": str(model.version), "format": model.format})
    batcher: DynamicBatcher[ImageInput, object] = DynamicBatcher(
        model.classify, max_batch=max_batch, max_latency=max_latency, on_batch=metrics.observe_batch
    )
    limit_mb = max_body_bytes / 2**20

    async def classify(images: list[ImageInput]) -> list:
        results = await asyncio.gather(*(batcher.submit(image) for image in images), return_exceptions=True)
        for result in results:
            if isinstance(result, ValueError):  # the image's own refusal, naming it
                raise RequestError(str(result), reason="invalid_image")
            if isinstance(result, BaseException):
                raise result
        return results

    def check_model(request: Request) -> None:
        name = request.path_params["name"]
        if name != model.name:
            raise RequestError(
                f"model {name!r} is not served here; this server serves {model.name!r} "
                f"(POST /v1/models/{model.name}:predict)",
                status=404,
                reason="unknown_model",
            )
        version = request.path_params.get("version")
        if version is not None and version != str(model.version):
            raise RequestError(
                f"version {version!r} of model {model.name!r} is not served here; this server serves version "
                f"{model.version} (or leave /versions/<v> out)",
                status=404,
                reason="unknown_version",
            )

    async def index(request: Request) -> Response:
        return JSONResponse(
            {
                "model": describe(model),
                "endpoints": {
                    "predict (TF Serving)": f"POST /v1/models/{model.name}:predict {tfserving.EXAMPLE}",
                    "status (TF Serving)": f"GET /v1/models/{model.name}",
                    "metadata (TF Serving)": f"GET /v1/models/{model.name}/metadata",
                    "predict (upload)": "POST /predict?top_k=5 with the image as multipart field 'file'",
                    "health": "GET /healthz",
                    "metrics": "GET /metrics",
                },
            }
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", **describe(model)})

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def status(request: Request) -> Response:
        check_model(request)
        return JSONResponse(tfserving.status_response(model.version))

    async def metadata(request: Request) -> Response:
        check_model(request)
        return JSONResponse(tfserving.metadata_response(model.name, model.version, len(model.labels)))

    async def tf_predict(request: Request) -> Response:
        check_model(request)
        parsed = tfserving.parse_predict(await request.body())
        rows = await classify(parsed.images)
        return JSONResponse(tfserving.predict_response(rows, model.labels, parsed.columnar))

    async def upload_predict(request: Request) -> Response:
        top_k = _top_k(request, len(model.labels))
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            async with request.form(max_files=1, max_fields=16) as form:
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    raise RequestError(
                        "no file in the multipart field 'file'; send the image as "
                        "curl -F file=@image.jpg http://HOST:PORT/predict"
                    )
                image = ImageInput(upload.filename or "file", await upload.read())
        elif content_type.startswith("application/json"):
            raise RequestError(
                f"POST /predict takes an image, not JSON; send JSON to POST /v1/models/{model.name}:predict "
                "(TF Serving's API), or the image as multipart field 'file'",
                status=415,
            )
        else:  # the raw image as the body (curl --data-binary @image.jpg)
            image = ImageInput("request body", await request.body())
        if not image.data:
            raise RequestError(
                f"{image.source}: empty; send the image as curl -F file=@image.jpg http://HOST:PORT/predict"
            )
        (result,) = await classify([image])
        from workbench.serving.predict import answer, top_k_predictions

        predictions = top_k_predictions(result.probabilities, model.labels, top_k)
        return JSONResponse({**answer(result.index, model.labels), "image": image.source, "predictions": predictions})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        messages = {
            404: f"no such endpoint: {request.method} {request.url.path}; see GET / for the endpoints",
            405: f"{request.method} is not allowed on {request.url.path}; see GET / for the endpoints",
            413: f"the request body is over the limit of {limit_mb:g} MB; send a smaller image, or start the "
            "server with a larger --max-body-mb",
        }
        reasons = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        request.scope[_REASON] = reasons.get(exc.status_code, "bad_request")
        message = messages.get(exc.status_code, str(exc.detail))
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        # Starlette logs nothing here and re-raises after this answer, so uvicorn logs the traceback.
        return JSONResponse(
            {
                "error": f"internal error: {type(exc).__name__}: {exc}; the server keeps serving, its log has the details"
            },
            status_code=500,
        )

    async def request_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)
        request.scope[_REASON] = exc.reason
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        Route("/predict", upload_predict, methods=["POST"]),
        Route("/v1/models/{name}:predict", tf_predict, methods=["POST"]),
        Route("/v1/models/{name}/versions/{version}:predict", tf_predict, methods=["POST"]),
        Route("/v1/models/{name}/metadata", metadata, methods=["GET"]),
        Route("/v1/models/{name}/versions/{version}/metadata", metadata, methods=["GET"]),
        Route("/v1/models/{name}", status, methods=["GET"]),
        Route("/v1/models/{name}/versions/{version}", status, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, RequestError: request_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.add_middleware(_BodyLimit, max_body_bytes=max_body_bytes)
    app.add_middleware(_Measure, metrics=metrics)  # added last: the outer one, it sees the 413s
    app.state.metrics = metrics
    app.state.batcher = batcher
    return app


def describe(model: ServedModel) -> dict:
    return {
        "name": model.name,
        "version": model.version,
        "format": model.format,
        "path": str(model.location.path),
        "classes": len(model.labels),
    }


def _top_k(request: Request, classes: int) -> int:
    text = request.query_params.get("top_k", str(DEFAULT_TOP_K))
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise RequestError(f"top_k={text!r}: expected a whole number of at least 1 (e.g. /predict?top_k=3)")
    return min(value, classes)


class _BodyLimit:
    """ASGI middleware: a request body over `max_body_bytes` raises a 413 `HTTPException` when it is read.

    A declared Content-Length over the limit is refused at the first read, before any of the body arrives;
    a chunked body is counted as it arrives. The exception goes to the JSON error handler like any other.
    (Starlette's own `max_body_size` answers a declared length in plain text instead.) Once the answer is
    sent, uvicorn reads and discards the rest of the body, so a client that sends it all still gets the 413.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                raise HTTPException(413)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413)
            return message

        await self.app(scope, receive_limited, send)


class _Measure:
    """ASGI middleware: each HTTP request's route template, status, latency and refusal reason into `Metrics`.

    It sits inside Starlette's body-size limit and outside its exception handlers, so it sees the JSON
    error responses; an exception nobody handled is counted as a 500.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_measured(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_measured)
        except Exception:  # answered by `server_error` outside this middleware, and logged by uvicorn
            scope.setdefault(_REASON, "internal")
            raise
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            reason = scope.get(_REASON, "internal" if status >= 500 else None)
            self.metrics.observe_request(template, scope["method"], status, time.perf_counter() - started, reason)
