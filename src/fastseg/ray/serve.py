"""The PaddleX-compatible service on Ray Serve: the SAME FastAPI app (``create_app``: routes,
schema, limits, page) as a Serve deployment with N replicas, one ``Segmenter`` each, batching
through Ray Serve's own ``@serve.batch`` instead of the home-made batcher.

    app = build_serve_app("PP-LiteSeg-T", replicas=2)   # needs a running Ray
    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    serve.run(app, name="fastseg", route_prefix="/")

Admission and load shedding: each replica takes at most ``max_ongoing_requests`` requests;
Serve queues up to ``queue_size`` more per deployment and answers 503 beyond that, and the
app's own limits (body size, pixels, API key, timeouts) apply in every replica unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import FastAPI
from ray import serve
from ray.serve.deployment import Application

from fastseg.ray.cluster import ModelFiles, WorkerSegmenter, cluster_resources, fetch_model
from fastseg.ray.devices import WorkerPlan, plan_workers
from fastseg.engines.session_base import CancelToken
from fastseg.serving.app import create_app
from fastseg.serving.batcher import Batcher, Inference, PredictFn, RequestedSize, Ticket
from fastseg.serving.config import ServingConfig

DEPLOYMENT_NAME = "fastseg"
_Job = tuple[npt.NDArray[np.uint8], RequestedSize]


class ServeBatcher(Batcher):
    """``Batcher``'s admission control (``try_admit``/``release``, 503 when full) with Ray Serve's
    ``@serve.batch`` doing the batching: up to ``max_batch`` requests, waiting ``max_wait_ms``,
    ``workers`` batches at once; each batch runs off the event loop in a thread. Serve's batch
    owns the requests' lifetimes, so a running batch is not cancelled here."""

    cancellable = False

    def __init__(self, predict: PredictFn, config: ServingConfig) -> None:
        super().__init__(
            predict, max_batch=config.max_batch, max_wait_s=config.max_wait_ms / 1000.0,
            capacity=config.queue_size, workers=config.workers,
        )

        async def run_batch(jobs: list[_Job]) -> list[Inference]:
            return await self._run_jobs(jobs)

        self._batched = serve.batch(
            max_batch_size=config.max_batch,
            batch_wait_timeout_s=config.max_wait_ms / 1000.0,
            max_concurrent_batches=config.workers,
        )(run_batch)

    async def start(self) -> None:
        """Nothing to start: Serve runs the batching loop."""

    async def stop(self) -> None:
        """Nothing to stop: Serve drains the replica."""

    async def submit(self, ticket: Ticket, image: npt.NDArray[np.uint8], target_size: RequestedSize) -> Inference:
        """Hand one image to ``@serve.batch`` and wait for its label map."""
        if not ticket.submitted:
            ticket.submitted = True
            self._upcoming -= 1
        result: Inference = await self._batched((image, target_size))
        return result

    async def _run_jobs(self, jobs: Sequence[_Job]) -> list[Inference]:
        """One Serve batch: one ``predict`` call per requested target size, in a thread."""
        groups: dict[RequestedSize, list[int]] = {}
        for i, (_, target) in enumerate(jobs):
            groups.setdefault(target, []).append(i)
        out: list[Inference | None] = [None] * len(jobs)
        for target, idx in groups.items():
            started = time.perf_counter()
            # Serve's batch owns the requests' lifetimes: this call is not cancelled (a token nobody cancels)
            labels = await asyncio.to_thread(self._predict, [jobs[i][0] for i in idx], target, CancelToken())
            if len(labels) != len(idx):
                raise RuntimeError(f"segmenter returned {len(labels)} results for {len(idx)} images")
            infer_ms = (time.perf_counter() - started) * 1000.0
            self.stats.batches += 1
            self.stats.images += len(idx)
            self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(idx))
            for i, pred in zip(idx, labels):
                out[i] = Inference(pred.labels_hw, infer_ms, len(idx), pred.score_hw)
        return [r for r in out if r is not None]


@serve.ingress()
class FastsegDeployment:
    """One replica: its own ``Segmenter`` (from the shipped model files) behind ``create_app``."""

    def __init__(
        self, model: Any, config: ServingConfig, plan: WorkerPlan, segmenter_kwargs: Mapping[str, Any]
    ) -> None:
        self._worker = WorkerSegmenter(
            fetch_model(model), device=plan.device, threads=plan.intra_op_threads, segmenter_kwargs=segmenter_kwargs
        )
        self._config = config

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self._worker.segmenter, self._config, batcher_factory=ServeBatcher)

    def __del__(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.close()


def build_serve_app(
    model: str | Path,
    *,
    config: ServingConfig | None = None,
    replicas: int | None = None,
    max_ongoing_requests: int | None = None,
    device: str = "cpu",
    **segmenter_kwargs: Any,
) -> Application:
    """The bound Serve application for ``model`` (pass it to ``serve.run``). Needs a running Ray.

    Args:
        model: zoo name or converted model directory (resolved here, shipped to replicas).
        config: serving limits and batching (``max_batch``/``max_wait_ms`` feed ``@serve.batch``).
        replicas: replicas (default: one per listed device, or one per node on CPU).
        max_ongoing_requests: requests one replica works on at once (default: 2 x max_batch, so
            a batch can fill while the previous one runs).
        device: ``cpu``, ``gpu:0,1`` (one replica per GPU), ...
        **segmenter_kwargs: passed to each replica's ``Segmenter``; ``weights`` and ``home`` choose the model
            here, before it is shipped.

    Raises:
        DeviceError, UnknownModelError, ModelDirError, MissingDependencyError.
    """
    import ray

    config = config or ServingConfig()
    plan = plan_workers(device, workers=replicas, cluster=cluster_resources())
    kwargs = dict(segmenter_kwargs)
    kwargs.setdefault("batch_size", config.max_batch)
    kwargs.setdefault("scores", config.scores)
    package = ModelFiles.pack(model, home=kwargs.pop("home", None), weights=kwargs.pop("weights", "official"))
    deployment = serve.deployment(
        name=DEPLOYMENT_NAME,
        num_replicas=plan.workers,
        max_ongoing_requests=max_ongoing_requests or 2 * config.max_batch,
        max_queued_requests=config.queue_size,
        ray_actor_options=plan.ray_options(),
    )(FastsegDeployment)
    app: Application = deployment.bind(ray.put(package), config, plan, kwargs)
    return app
