"""The HTTP service: one loaded classifier behind FastAPI, requests batched together.

Requests that arrive while the model is busy wait in a queue; the worker takes everything
queued (up to `max_batch_texts` texts) and runs it as one batch in a single thread, so the model
is never used by two threads at once.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict

from .predict import Classifier

STATIC = Path(__file__).parent / "static"


@dataclass
class Limits:
    max_texts: int = 64  # per request
    max_chars: int = 10_000  # per text
    max_batch_texts: int = 128  # per forward pass, across requests


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    texts: list[str]


class Prediction(BaseModel):
    label: str
    score: float
    probabilities: dict[str, float]


class ClassifyResponse(BaseModel):
    predictions: list[Prediction]


class Batcher:
    """Collects texts from concurrent requests and classifies them together."""

    def __init__(self, classifier: Classifier, max_batch_texts: int):
        self.classifier, self.max_batch_texts = classifier, max_batch_texts
        self.queue: asyncio.Queue = asyncio.Queue()
        self.batches = 0  # forward batches run, for /v1/model and the load benchmark

    async def classify(self, texts: list[str]) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            count = len(jobs[0][0])
            while not self.queue.empty() and count < self.max_batch_texts:
                job = self.queue.get_nowait()
                jobs.append(job)
                count += len(job[0])
            texts = [t for job_texts, _ in jobs for t in job_texts]
            try:
                predictions = await loop.run_in_executor(None, self.classifier.predict, texts)
                self.batches += 1
            except Exception as e:  # hand the failure to every waiting request
                for _, future in jobs:
                    future.set_exception(e)
                continue
            start = 0
            for job_texts, future in jobs:
                future.set_result(predictions[start: start + len(job_texts)])
                start += len(job_texts)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def create_app(classifier: Classifier, run_dir: Path | None = None, limits: Limits = Limits()) -> FastAPI:
    batcher = Batcher(classifier, limits.max_batch_texts)
    metrics = {}
    if run_dir and (Path(run_dir) / "metrics.json").is_file():
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())

    @asynccontextmanager
    async def lifespan(app):
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()

    app = FastAPI(title="gptclassify", version=classifier.config.get("gptclassify_version", ""), lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    @app.post("/v1/classify", response_model=ClassifyResponse,
              responses={413: {"description": "too many texts, or a text too long"}})
    async def classify(body: ClassifyRequest):
        if len(body.texts) > limits.max_texts:
            return error(413, f"at most {limits.max_texts} texts per request, got {len(body.texts)}")
        for i, text in enumerate(body.texts):
            if len(text) > limits.max_chars:
                return error(413, f"texts.{i}: at most {limits.max_chars} characters, got {len(text)}")
        if not body.texts:
            return {"predictions": []}
        return {"predictions": await batcher.classify(body.texts)}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_info():
        c = classifier.config
        return {"labels": classifier.labels, "model_name": c.get("model_name"), "weights": c.get("weights"),
                "max_length": c["max_length"], "pooling": c["pooling"], "metrics": metrics,
                "limits": {"max_texts": limits.max_texts, "max_chars": limits.max_chars},
                "batches_run": batcher.batches}

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return (STATIC / "index.html").read_text(encoding="utf-8")

    return app


def serve(run_dir: Path, host: str = "127.0.0.1", port: int = 8000, device: str = "auto", limits: Limits = Limits()):
    import uvicorn

    classifier = Classifier.load(run_dir, device)
    uvicorn.run(create_app(classifier, run_dir, limits), host=host, port=port, log_level="info")
