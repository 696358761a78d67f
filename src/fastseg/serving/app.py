"""``create_app``: a FastAPI app serving one ``Segmenter`` with PaddleX's HTTP contract.

Three parts: the request and response shapes (``schema.py``), the routes (``routes.py``) and
one ``InferenceHandler`` (``handler.py``) that owns the budgets, the CPU threads and the
batcher; this module wires them and runs their lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fastseg.serving.config import ServingConfig
from fastseg.serving.docs import add_offline_docs
from fastseg.serving.guard import Guard
from fastseg.serving.handler import BatcherFactory, InferenceHandler, default_batcher
from fastseg.serving.routes import add_error_handlers, add_routes
from fastseg.serving.schema import InferRequest, InferResponse, SegmenterLike

__all__ = ["BatcherFactory", "InferRequest", "InferResponse", "SegmenterLike", "create_app", "default_batcher"]


def create_app(
    segmenter: SegmenterLike, config: ServingConfig | None = None, *, batcher_factory: BatcherFactory | None = None
) -> FastAPI:
    """Build the serving app for ``segmenter``.

    Args:
        segmenter: a ``fastseg.segmenter.Segmenter`` (or anything with ``meta`` and
            ``predict_images``). The app does not own it: close it after the server stops.
        config: limits, batching and security (default: ``ServingConfig()``, the safe defaults).
        batcher_factory: builds the batch runner (default: ``default_batcher``); a subclass of
            ``Batcher`` may batch differently, e.g. with Ray Serve's ``@serve.batch``.

    Returns:
        The FastAPI app; its lifespan starts and stops the batching and CPU threads, so run it
        under an ASGI server (``fastseg.serving.server.run_server`` adds the connection limits)
        or ``fastseg serve``.
    """
    config = config or ServingConfig()
    handler = InferenceHandler(segmenter, config, batcher_factory)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await handler.start()
        try:
            yield
        finally:
            await handler.stop()

    app = FastAPI(
        title="fastseg serving",
        summary=f"PaddleX-compatible semantic segmentation: {handler.meta.model_name}",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by add_offline_docs from packaged assets, not a CDN
        redoc_url=None,
    )
    add_offline_docs(app)
    app.state.handler = handler
    app.state.batcher = handler.batcher
    app.state.budget = handler.budget
    app.state.config = config
    app.add_middleware(Guard, api_key=config.api_key, max_body_bytes=config.max_body_bytes)
    add_error_handlers(app)
    add_routes(app, handler)
    return app
