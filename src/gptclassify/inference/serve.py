"""The HTTP service: one loaded classifier behind FastAPI, requests batched together.

Requests that arrive while the model is busy wait in a queue; the worker takes everything
queued (up to `max_batch_texts` texts) and runs it as one batch in a single thread, so the model
is never used by two threads at once.

What a service facing strangers needs is here too: a body-size limit applied before the body is
parsed, a JSON 4xx for every malformed request, a bounded queue that answers 503 with Retry-After
when full, a time limit per request, an API key (compared in constant time) that must be set to
listen beyond this machine, and a graceful stop on SIGTERM that answers what was accepted.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserError
from ..files import MAX_JSON_BYTES, read_json
from ..config import Limits
from .backends import load_classifier
from .base import TextClassifier as Classifier, abstain

STATIC = Path(__file__).parent / "static"


class Busy(Exception):
    """The queue is full."""


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    texts: list[str] | None = None
    pairs: list[Annotated[list[str], Field(min_length=2, max_length=2)]] | None = None  # [[text, text_pair], ...]
    min_score: Annotated[float, Field(ge=0, le=1)] | None = None  # single-label: under it, "label" is null


class Prediction(BaseModel):
    label: str | None  # null: the top score was under the request's min_score
    score: float
    probabilities: dict[str, float]


class LabelSetPrediction(BaseModel):
    labels: list[str]  # the labels at or over their thresholds
    scores: dict[str, float]


class ValuePrediction(BaseModel):
    value: float


class ClassifyResponse(BaseModel):
    predictions: list[Prediction]


class LabelSetResponse(BaseModel):
    predictions: list[LabelSetPrediction]


class ValueResponse(BaseModel):
    predictions: list[ValuePrediction]


# The answer's shape for each task: the OpenAPI schema says which one a service gives.
RESPONSES = {"single-label": ClassifyResponse, "multi-label": LabelSetResponse, "regression": ValueResponse}


class ModelFailed(Exception):
    """The model raised on the batch that held a request's texts."""


def free_gpu_cache() -> None:
    """After a failure on a GPU (out of memory, most often), give back what the failed batch held."""
    torch = sys.modules.get("torch")  # not loaded: the ONNX Runtime backend, nothing to free
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class Batcher:
    """Collects texts from concurrent requests and classifies them together."""

    def __init__(self, classifier: Classifier, max_batch_texts: int, max_queue_texts: int):
        self.classifier, self.max_batch_texts, self.max_queue_texts = classifier, max_batch_texts, max_queue_texts
        self.queue: asyncio.Queue = asyncio.Queue()
        self.waiting = 0  # texts queued and not yet taken by the worker
        self.batches = 0  # forward batches run, for /v1/model and the load benchmark

    async def classify(self, texts: list[str]) -> list[dict]:
        if self.waiting + len(texts) > self.max_queue_texts:
            raise Busy
        future = asyncio.get_running_loop().create_future()
        self.waiting += len(texts)
        self.queue.put_nowait((texts, future))
        return await future

    async def run(self):
        """Serve batches until cancelled; whatever one batch raises, the next is served."""
        while True:
            try:
                await self.run_one_batch()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001  (a bug of ours here must not end the service)
                print(f"gptclassify serve: the batching worker failed ({type(e).__name__}: {e}); it goes on",
                      file=sys.stderr, flush=True)

    async def run_one_batch(self):
        loop = asyncio.get_running_loop()
        jobs = [await self.queue.get()]
        count = len(jobs[0][0])
        while not self.queue.empty() and count < self.max_batch_texts:
            job = self.queue.get_nowait()
            jobs.append(job)
            count += len(job[0])
        self.waiting -= count
        jobs = [job for job in jobs if not job[1].done()]  # requests that timed out or went away cost nothing
        if not jobs:
            return
        texts = [t for job_texts, _ in jobs for t in job_texts]
        try:
            predictions = await loop.run_in_executor(None, self.classifier.predict, texts)
            self.batches += 1
        except Exception as e:  # noqa: BLE001  (CUDA out of memory, say): each waiting request gets a 503
            print(f"gptclassify serve: the model failed on a batch of {len(texts)} texts "
                  f"({type(e).__name__}: {str(e)[:300]})", file=sys.stderr, flush=True)
            free_gpu_cache()
            for _, future in jobs:
                if not future.done():
                    future.set_exception(ModelFailed(type(e).__name__))
            return
        start = 0
        for job_texts, future in jobs:
            if not future.done():
                future.set_result(predictions[start: start + len(job_texts)])
            start += len(job_texts)


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read, so nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def error(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


class BodyLimit:
    """ASGI middleware: refuse a request body over `max_bytes` with 413 before anything parses it,
    by its Content-Length or, without one, by counting what arrives."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await error(413, f"the body is over {self.max_bytes} bytes")(scope, receive, send)
        seen, responded = 0, False

        async def limited_receive():  # a body without Content-Length (chunked) is counted as it comes
            nonlocal seen, responded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes and not responded:
                responded = True
                await error(413, f"the body is over {self.max_bytes} bytes")(scope, receive, send)
                return {"type": "http.disconnect"}  # the app stops reading, and its answer goes nowhere
            return message

        async def guarded_send(message):
            if not responded:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not responded:
                raise


class ApiKey:
    """ASGI middleware: /v1/ answers only requests with `Authorization: Bearer KEY`."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                response = error(401, "missing or wrong API key (send Authorization: Bearer KEY)")
                response.headers["WWW-Authenticate"] = "Bearer"
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def request_texts(body: ClassifyRequest, pairs: bool) -> list | JSONResponse:
    """The texts (or pairs, for a pair run) of a request, or the 422 that says which it lacks."""
    if (body.texts is None) == (body.pairs is None):
        return error(422, "body: give either 'texts' or 'pairs'")
    if pairs != (body.pairs is not None):
        return error(422, "body: this run classifies pairs: send {\"pairs\": [[text, text_pair], ...]}" if pairs
                     else "body: this run classifies single texts: send {\"texts\": [...]}")
    return [tuple(p) for p in body.pairs] if pairs else body.texts


async def answer(texts: list, request: Request, batcher: Batcher, limits: Limits, min_score: float | None = None):
    """POST /v1/classify: the predictions (under `min_score`, unlabelled), or the JSON error that
    says why there are none."""
    task = batcher.classifier.task
    if min_score is not None and task != "single-label":
        return error(422, f"min_score: a {task} run has no one class to withhold")
    if len(texts) > limits.max_texts:
        return error(413, f"at most {limits.max_texts} texts per request, got {len(texts)}")
    for i, text in enumerate(texts):
        pair = isinstance(text, tuple)
        longest = max(map(len, text)) if pair else len(text)
        if longest > limits.max_chars:
            return error(413, f"{'pairs' if pair else 'texts'}.{i}: at most {limits.max_chars} characters a text, "
                              f"got {longest}")
    if not texts:
        return {"predictions": []}
    work = asyncio.ensure_future(batcher.classify(texts))
    gone = asyncio.ensure_future(client_gone(request))
    try:
        await asyncio.wait({work, gone}, timeout=limits.timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not work.done():  # timed out, or the client went away: the model never sees these texts
        work.cancel()
        return error(503, f"not answered within {limits.timeout_s:g} s; try again shortly", retry_after=5)
    try:
        return {"predictions": abstain(work.result(), min_score)}
    except Busy:
        return error(503, "the model is busy; try again shortly", retry_after=1)
    except ModelFailed as e:
        return error(503, f"the model failed on this request's batch ({e}); try again shortly", retry_after=1)


def create_app(classifier: Classifier, run_dir: Path | None = None, limits: Limits = Limits(),
               api_key: str | None = None) -> FastAPI:
    batcher = Batcher(classifier, limits.max_batch_texts, limits.max_queue_texts)
    metrics = {}
    if run_dir and (Path(run_dir) / "metrics.json").is_file():
        metrics = read_json(Path(run_dir) / "metrics.json", max_bytes=MAX_JSON_BYTES)

    @asynccontextmanager
    async def lifespan(app):
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()

    app = FastAPI(title="gptclassify", version=classifier.config.gptclassify_version, lifespan=lifespan)
    if api_key:
        app.add_middleware(ApiKey, key=api_key)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):  # 404, 405, ... as {"error": ...}
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "extra_forbidden":  # a misspelt key: say what the body holds
            return error(422, f"{where}: unknown field; the body is {{\"texts\": [...]}} "
                              f"(or {{\"pairs\": [[text, text_pair], ...]}} for a run trained on pairs)")
        return error(422, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    @app.post("/v1/classify", response_model=RESPONSES[classifier.task],
              responses={401: {"description": "missing or wrong API key (when the service has one)"},
                         413: {"description": "the body, the number of texts or a text is too large"},
                         422: {"description": "the body is not {\"texts\": [strings]}"},
                         503: {"description": "the queue is full or the answer took too long; see Retry-After"}})
    async def classify(body: ClassifyRequest, request: Request):
        texts = request_texts(body, classifier.pairs)
        return texts if isinstance(texts, JSONResponse) else await answer(texts, request, batcher, limits,
                                                                          body.min_score)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_info():
        c = classifier.config
        return {"labels": classifier.labels, "task": classifier.task, "pairs": classifier.pairs,
                "model_name": c.model_name, "weights": c.weights,
                "max_length": c.policy.max_length, "pooling": c.policy.pooling, "metrics": metrics,
                "limits": {"max_texts": limits.max_texts, "max_chars": limits.max_chars},
                "batches_run": batcher.batches}

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return (STATIC / "index.html").read_text(encoding="utf-8")

    return app


def serve(run_dir: Path, host: str = "127.0.0.1", port: int = 8000, device: str = "auto", limits: Limits = Limits(),
          api_key: str | None = None, no_auth: bool = False, backend: str = "torch"):
    """Serve until SIGTERM or Ctrl-C; then stop taking connections and answer the requests already
    taken (for up to `limits.timeout_s`) before exiting."""
    import uvicorn

    if not 0 <= port <= 65535:
        raise UserError(f"--port must be 0..65535, not {port}")
    if not api_key and not no_auth and not is_loopback(host):
        raise UserError(f"--host {host} listens beyond this machine: give an API key (--api-key-file or "
                        f"{API_KEY_ENV}), or --no-auth to serve without one")
    classifier = load_classifier(run_dir, backend, device)
    uvicorn.run(create_app(classifier, run_dir, limits, api_key), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=int(limits.timeout_s) + 1)


API_KEY_ENV = "GPTCLASSIFY_API_KEY"


def read_api_key(path: Path | None) -> str | None:
    """The key from --api-key-file (its first line), else from GPTCLASSIFY_API_KEY, else None."""
    if path is None:
        return os.environ.get(API_KEY_ENV) or None
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the API key ({e})") from None
    if len(key) < 16 or any(c.isspace() for c in key):
        raise UserError(f"{path}: an API key must be one line of at least 16 characters without spaces")
    return key


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
