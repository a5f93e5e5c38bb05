"""The prediction service as a Starlette app: routes, limits, errors as JSON answers.

    POST /v1/predict?top_k=5&cam=1&cam_class=3   image bytes, or multipart with a `file` field
    GET  /v1/model                               classes, preprocessing, batching and limits
    GET  /ping, /v2/health/live, /v2/health/ready
    GET  /v2, /v2/models/NAME, /v2/models/NAME/ready     the Open Inference Protocol (KServe V2, Triton)
    POST /v2/models/NAME/infer                   its inference: JSON or the binary tensor data extension
    GET  /metrics                                Prometheus text
    GET  /                                       the page (one file, works offline)

Every failure is `{"error": "...", "code": N}` with a 4xx status (503/504 for load) (`{"error": "..."}`
on the protocol's routes), logged in one line; the next request is answered as if nothing happened.
With an API key, every route but the health probes and the page needs `Authorization: Bearer KEY`
(compared in constant time; 401 otherwise).
"""
import asyncio
import base64
import contextlib
import hmac
import io
import logging
import time
from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np
import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..gradcam import overlay
from ..predictor import Predictor, rank
from .oip import HEADER_LENGTH, ProtocolError, encode_infer, model_metadata, parse_infer, server_metadata
from .batcher import Batcher, Overloaded
from .images import MEDIA_TYPES, BadImage, decode
from .metrics import Metrics

log = logging.getLogger("convnext.serve")
RAW_TYPES = MEDIA_TYPES | {"application/octet-stream", ""}  # "" : no Content-Type at all
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}
OPEN_PATHS = {"/ping", "/v2/health/live", "/v2/health/ready", "/"}  # probes and the page: no key needed


@dataclass
class Settings:
    max_batch_size: int = 8
    max_batch_delay_ms: float = 5.0
    queue_size: int = 64
    max_upload_mb: float = 10.0
    request_timeout_s: float = 30.0
    cam_stage: int = -1


class HTTPError(Exception):
    def __init__(self, code: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.headers = code, message, headers


@dataclass
class Job:
    image: torch.Tensor  # preprocessed (C, H, W)
    top_k: int
    cam: bool
    cam_class: int | None  # None: the top-1 class
    probabilities: bool = False  # also every class's probability (the protocol's output)


def error_response(code: int, message: str, headers: dict | None = None, protocol: bool = False) -> JSONResponse:
    """Our error body, or the Open Inference Protocol's ({"error": message} alone) on its routes."""
    body = {"error": message} if protocol else {"error": message, "code": code}
    return JSONResponse(body, status_code=code, headers=headers)


def png_data_url(picture) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class Service:
    def __init__(self, predictor: Predictor, settings: Settings, model_name: str, api_key: str | None = None):
        self.predictor, self.settings, self.model_name = predictor, settings, model_name
        self._key = api_key.encode() if api_key else None  # never logged, never in /v1/model
        self.metrics = Metrics()
        self.batcher: Batcher | None = None  # made in the lifespan: it needs the running loop
        self.ready = False

    # ---- inference thread -------------------------------------------------------------------
    def answer(self, jobs: list[Job]) -> list[dict]:
        batch = torch.stack([job.image for job in jobs])
        probabilities = self.predictor(batch)
        answers = [{"top": rank(row[None], job.top_k, self.predictor.class_names)[0]}
                   for job, row in zip(jobs, probabilities)]
        for job, row, answer in zip(jobs, probabilities, answers):
            if job.probabilities:
                answer["probabilities"] = row.float().cpu().numpy()
        wanting = [i for i, job in enumerate(jobs) if job.cam]
        if wanting:
            classes = [answers[i]["top"][0]["index"] if jobs[i].cam_class is None else jobs[i].cam_class
                       for i in wanting]
            cams, crops = self.predictor.cams(batch[wanting], self.settings.cam_stage, classes)
            for n, i in enumerate(wanting):
                # The picture is drawn and PNG-encoded in the request's worker thread, not on this one,
                # which every request's inference waits for.
                answers[i]["cam"] = {"class_index": classes[n], "empty": cams.empty[n], "grid": cams.maps[n].tolist(),
                                     "overlay": (crops[n], cams.maps[n])}
        return answers

    # ---- request side -----------------------------------------------------------------------
    def parse_query(self, request: Request) -> tuple[int, bool, int | None]:
        query = request.query_params
        unknown = set(query) - {"top_k", "cam", "cam_class"}
        if unknown:
            raise HTTPError(422, f"unknown query parameter {sorted(unknown)[0]!r} (known: top_k, cam, cam_class)")
        top_k = query.get("top_k", "5")
        if not top_k.isdigit() or int(top_k) < 1:
            raise HTTPError(422, f"top_k must be a positive integer, got {top_k!r}")
        cam = query.get("cam", "").lower()
        if cam not in TRUE | FALSE:
            raise HTTPError(422, f"cam must be 1 or 0, got {cam!r}")
        cam_class = query.get("cam_class")
        if cam_class is not None:
            names = self.predictor.class_names or []
            if cam_class in names:
                cam_class = names.index(cam_class)
            elif cam_class.isdigit() and int(cam_class) < self.predictor.num_classes:
                cam_class = int(cam_class)
            else:
                raise HTTPError(422, f"cam_class must be a class name or an index below "
                                     f"{self.predictor.num_classes}, got {cam_class!r}")
        wants_cam = cam in TRUE or cam_class is not None
        if wants_cam and not self.predictor.heat_maps:
            raise HTTPError(422, f"heat maps need gradients: this service runs on {self.predictor.backend} "
                                 "(convnext serve --backend pytorch has them)")
        return min(int(top_k), self.predictor.num_classes), wants_cam, cam_class

    async def read_body(self, request: Request) -> bytes:
        limit = int(self.settings.max_upload_mb * 2**20)
        too_large = HTTPError(413, f"body over the {self.settings.max_upload_mb:g} MB limit (--max-upload-mb)")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body, size = [], 0
        async for chunk in request.stream():  # counted as it arrives: Content-Length may lie or be absent
            size += len(chunk)
            if size > limit:
                raise too_large
            body.append(chunk)
        request.state.size = size
        return b"".join(body)

    @staticmethod
    def media_type(request: Request) -> str:
        return request.headers.get("content-type", "").split(";")[0].strip().lower()

    async def read_image_bytes(self, request: Request) -> bytes:
        media = self.media_type(request)
        if media not in RAW_TYPES and media != "multipart/form-data":
            raise HTTPError(415, f"unsupported media type {media!r}: send the image's bytes "
                                 "(Content-Type image/png, image/jpeg, ...) or a multipart form with a 'file' field")
        data = await self.read_body(request)
        return await self.form_file(request, data) if media == "multipart/form-data" else data

    @staticmethod
    async def form_file(request: Request, data: bytes) -> bytes:
        async def replay():
            return {"type": "http.request", "body": data, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
        except HTTPException as error:
            raise HTTPError(400, f"bad multipart body: {error.detail}") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPError(400, "multipart body needs the image in a file field named 'file'")
        return await upload.read()

    def preprocess(self, data: bytes) -> torch.Tensor:
        return self.predictor.transform(decode(data, self.predictor.image_mode))

    async def predict(self, request: Request) -> Response:
        started = time.perf_counter()
        top_k, cam, cam_class = self.parse_query(request)
        data = await self.read_image_bytes(request)
        try:
            image = await run_in_threadpool(self.preprocess, data)
        except BadImage as error:
            raise HTTPError(400, str(error)) from None
        [(answer, timing)] = await self.run_jobs(request, [Job(image, top_k, cam, cam_class)], started)
        if "cam" in answer:
            crop, heat = answer["cam"].pop("overlay")
            answer["cam"]["png"] = await run_in_threadpool(lambda: png_data_url(overlay(crop, heat)))
        answer = {"model": self.model_name, **answer,
                  "timing_ms": {"queue": round(1000 * timing.queue_s, 3), "infer": round(1000 * timing.infer_s, 3),
                                "batch_size": timing.batch_size}}
        return JSONResponse(answer)

    async def run_jobs(self, request: Request, jobs: list[Job], started: float) -> list[tuple[dict, object]]:
        """Through the batcher, all or none (503 when the queue cannot take them all); within the timeout."""
        if self.batcher is None:  # only outside a lifespan (a bare ASGI call without startup)
            raise HTTPError(503, "not started", {"Retry-After": "1"})
        free = self.settings.queue_size - self.batcher.queue.qsize()
        if len(jobs) > self.settings.queue_size:
            raise HTTPError(413, f"a batch of {len(jobs)} images is over the queue's {self.settings.queue_size} "
                                 "(--queue-size): send fewer per request")
        if len(jobs) > free:
            raise HTTPError(503, f"busy: {free} places left in the queue for {len(jobs)} images; retry shortly",
                            {"Retry-After": "1"})
        try:
            futures = [self.batcher.submit(job) for job in jobs]
        except Overloaded as error:
            raise HTTPError(503, f"busy: {error}; retry shortly", {"Retry-After": "1"}) from None
        remaining = self.settings.request_timeout_s - (time.perf_counter() - started)
        try:
            results = await asyncio.wait_for(asyncio.gather(*futures), max(remaining, 0.001))
        except asyncio.TimeoutError:
            raise HTTPError(504, f"no answer within {self.settings.request_timeout_s:g} s (--request-timeout-s)") from None
        request.state.timing = results[-1][1]
        return results

    # ---- the Open Inference Protocol ----------------------------------------------------------
    def check_model(self, request: Request) -> None:
        name, version = request.path_params["model"], request.path_params.get("version", "1")
        if name != self.model_name or version != "1":
            raise HTTPError(404, f"no model {name!r} version {version!r} here; this server has "
                                 f"{self.model_name!r} version '1'")

    async def v2_server(self, request: Request) -> Response:
        from importlib.metadata import version

        return JSONResponse(server_metadata(version("convnext")))

    async def v2_model(self, request: Request) -> Response:
        self.check_model(request)
        p = self.predictor
        preprocessing = {"mean": list(p.mean), "std": list(p.std), "crop_pct": p.crop_pct,
                         "interpolation": p.interpolation, "crop_mode": p.crop_mode, "scale": "pixels / 255"}
        return JSONResponse(model_metadata(self.model_name, p.backend, self.class_names(), p.in_chans,
                                               p.input_size, preprocessing))

    async def v2_model_ready(self, request: Request) -> Response:
        self.check_model(request)
        return JSONResponse({"name": self.model_name, "ready": self.ready}, status_code=200 if self.ready else 503)

    def class_names(self) -> list[str]:
        p = self.predictor
        return list(p.class_names) if p.class_names else [str(i) for i in range(p.num_classes)]

    async def v2_infer(self, request: Request) -> Response:
        started = time.perf_counter()
        self.check_model(request)
        media = self.media_type(request)
        if media not in ("", "application/json", "application/octet-stream"):
            raise HTTPError(415, f"unsupported media type {media!r}: the protocol's requests are application/json, "
                                 "or application/octet-stream with Inference-Header-Content-Length")
        body = await self.read_body(request)
        p = self.predictor
        try:
            parsed = parse_infer(body, request.headers.get(HEADER_LENGTH), p.in_chans, p.input_size)
        except ProtocolError as error:
            raise HTTPError(error.code, str(error)) from None
        top_k = min(parsed.top_k, p.num_classes)
        if parsed.images is not None:
            images = []
            for n, data in enumerate(parsed.images):
                try:
                    images.append(await run_in_threadpool(self.preprocess, data))
                except BadImage as error:
                    raise HTTPError(400, f"image {n} of the batch: {error}") from None
        else:
            images = list(torch.from_numpy(parsed.pixels.copy()))
        results = await self.run_jobs(request, [Job(image, top_k, False, None, True) for image in images], started)
        probabilities = np.stack([answer["probabilities"] for answer, _ in results])
        labels = [[t["class"] for t in answer["top"]] for answer, _ in results]
        content, headers = encode_infer(parsed, self.model_name, probabilities, labels)
        return Response(content, headers=headers)

    async def describe(self, request: Request) -> Response:
        p = self.predictor
        return JSONResponse({
            "model": self.model_name, "classes": [str(i) for i in range(p.num_classes)] if not p.class_names
            else list(p.class_names), "in_chans": p.in_chans, "input_size": p.input_size, "crop_pct": p.crop_pct,
            "mean": list(p.mean), "std": list(p.std), "device": str(p.device),
            "amp": str(p.autocast).removeprefix("torch.") if p.autocast else None, "backend": p.backend,
            "heat_maps": p.heat_maps, **asdict(self.settings)})

    async def ping(self, request: Request) -> Response:
        return JSONResponse({"status": "Healthy" if self.ready else "Unhealthy"}, status_code=200 if self.ready else 503)

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def readiness(self, request: Request) -> Response:
        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

    async def metrics_text(self, request: Request) -> Response:
        batcher = self.batcher
        text = self.metrics.render(batcher.queue.qsize() if batcher else 0, self.settings.queue_size,
                                   batcher.batch_sizes if batcher else {})
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def page(self, request: Request) -> Response:
        return HTMLResponse(resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8"))

    # ---- plumbing ---------------------------------------------------------------------------
    def authorize(self, request: Request) -> None:
        """With a key: `Authorization: Bearer KEY`, compared in constant time, or 401."""
        if self._key is None or request.url.path in OPEN_PATHS:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._key):
            reason = "a wrong API key" if scheme.lower() == "bearer" else "no API key"
            raise HTTPError(401, f"{reason}: send the header 'Authorization: Bearer <key>'",
                            {"WWW-Authenticate": 'Bearer realm="convnext"'})

    def logged(self, endpoint, route: str, protocol: bool = False):
        """Errors become JSON answers (the protocol's form on its routes); every request is authorized,
        counted under its route's template (a model name in the path does not make a new series) and
        logged in one line."""
        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            try:
                self.authorize(request)
                response = await endpoint(request)
            except HTTPError as error:
                response = error_response(error.code, error.message, error.headers, protocol)
            except Exception:
                log.exception("internal error on %s", request.url.path)
                response = error_response(500, "internal error (logged by the server)", protocol=protocol)
            self.account(request, response.status_code, time.perf_counter() - started, route)
            return response
        return wrapped

    def account(self, request: Request, status: int, seconds: float, route: str | None = None) -> None:
        timing = getattr(request.state, "timing", None)
        self.metrics.record(route or request.url.path, status)
        details = ""
        if timing is not None:
            self.metrics.observe(seconds, timing.queue_s, timing.infer_s)
            details = (f" queue {1000 * timing.queue_s:.1f} ms infer {1000 * timing.infer_s:.1f} ms"
                       f" batch {timing.batch_size}")
        size = getattr(request.state, "size", None)
        log.info("%s %s %d%s%s total %.1f ms", request.method, request.url.path, status,
                 f" {size} B" if size is not None else "", details, 1000 * seconds)

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        s = self.settings
        self.batcher = Batcher(self.answer, s.max_batch_size, s.max_batch_delay_ms / 1000, s.queue_size)
        self.batcher.start()
        warm_up = asyncio.get_running_loop().create_task(self.warm_up())
        yield
        warm_up.cancel()
        await self.batcher.close()

    async def warm_up(self) -> None:
        """One batch (with a heat map where the backend has them) through the inference thread before saying ready."""
        p = self.predictor
        blank = torch.zeros(p.in_chans, p.input_size, p.input_size)
        await self.batcher.call(self.answer, [Job(blank, 1, p.heat_maps, None)])
        self.ready = True
        log.info("ready")

    async def not_found(self, request: Request, error: HTTPException) -> Response:
        self.account(request, error.status_code, 0.0, route="unrouted")  # a label per stray path would grow forever
        return error_response(error.status_code, f"{error.detail}: {request.method} {request.url.path}",
                              protocol=request.url.path.startswith("/v2"))


def create_app(predictor: Predictor, settings: Settings | None = None, model_name: str = "convnext",
               api_key: str | None = None) -> Starlette:
    service = Service(predictor, settings or Settings(), model_name, api_key)
    routes = [("/v1/predict", service.predict, ["POST"]), ("/v1/model", service.describe, ["GET"]),
              ("/ping", service.ping, ["GET"]), ("/v2/health/live", service.live, ["GET"]),
              ("/v2/health/ready", service.readiness, ["GET"]), ("/metrics", service.metrics_text, ["GET"]),
              ("/", service.page, ["GET"])]
    model = "/v2/models/{model}"
    protocol = [("/v2", service.v2_server, ["GET"])] + [
        (f"{model}{version}{path}", endpoint, methods) for version in ("", "/versions/{version}")
        for path, endpoint, methods in (("", service.v2_model, ["GET"]), ("/ready", service.v2_model_ready, ["GET"]),
                                        ("/infer", service.v2_infer, ["POST"]))]
    app = Starlette(routes=[Route(path, service.logged(endpoint, path), methods=methods)
                            for path, endpoint, methods in routes]
                    + [Route(path, service.logged(endpoint, path, protocol=True), methods=methods)
                       for path, endpoint, methods in protocol],
                    lifespan=service.lifespan, exception_handlers={HTTPException: service.not_found})
    app.state.service = service
    return app
