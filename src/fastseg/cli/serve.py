"""``fastseg serve``: PaddleX's HTTP contract on uvicorn, or on Ray Serve with ``--ray``."""

from __future__ import annotations

from pathlib import Path

import click

from fastseg.cli.options import (
    allow_fallback_option,
    device_option,
    engine_option,
    ray_address_option,
    weights_model,
    weights_option,
)


@click.command("serve")
@click.option("--model", required=True, help="Zoo model name (e.g. PP-LiteSeg-T) or a converted model directory.")
@weights_option()
@device_option()
@allow_fallback_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (keep loopback unless behind a proxy).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
    help="Serving YAML (visualize, limits, batching, api_key, url_inputs); see docs.",
)
@click.option(
    "--api-key", envvar="FASTSEG_API_KEY", default=None, show_envvar=True,
    help="Require 'Authorization: Bearer KEY' on inference (overrides the config's api_key).",
)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="ONNX Runtime intra-op threads (default: physical cores).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@engine_option()
@click.option("--ray", "use_ray", is_flag=True, help="Deploy on Ray Serve (the [ray] extra); implied by a device list such as gpu:0,1.")
@click.option("--replicas", type=click.IntRange(min=1), default=None,
              help="Ray Serve replicas [default: one per listed device, or one per node on CPU].")
@click.option("--max-ongoing-requests", type=click.IntRange(min=1), default=None,
              help="Requests one replica works on at once (with --ray) [default: 2 x max_batch].")
@ray_address_option()
def serve_cmd(
    model: str,
    weights: str,
    device: str,
    allow_fallback: bool,
    host: str,
    port: int,
    config_path: str | None,
    api_key: str | None,
    threads: int | None,
    log_level: str,
    engine: str,
    use_ray: bool,
    replicas: int | None,
    max_ongoing_requests: int | None,
    ray_address: str | None,
) -> None:
    """Serve MODEL over HTTP with PaddleX's /semantic-segmentation contract and a demo page at /."""
    try:
        from fastseg.serving import ServingConfig, create_app, load_serving_config
        from fastseg.serving.server import run_server
    except ImportError as exc:
        from fastseg.errors import MissingDependencyError

        raise MissingDependencyError(
            f"'fastseg serve' needs the [serve] extra ({exc.name} is missing): pip install 'fastseg-ort[serve]'"
        ) from exc
    from fastseg.engines.ort import RuntimeOptions
    from fastseg.ray.devices import is_multi_device
    from fastseg.segmenter import Segmenter

    from fastseg.serving.memory import limit_arenas
    from fastseg.serving.port import ensure_port_free

    config = load_serving_config(config_path) if config_path else ServingConfig()
    if api_key:
        config = config.replace(api_key=api_key)
    model_arg = weights_model(model, weights)
    if isinstance(model_arg, str) and Path(model_arg).is_dir():
        model_arg = Path(model_arg)
    if use_ray or ray_address or replicas or is_multi_device(device):
        from fastseg.ray.commands import run_serve

        run_serve(
            model=str(model_arg), device=device, host=host, port=port, config=config, replicas=replicas,
            max_ongoing_requests=max_ongoing_requests, address=ray_address, threads=threads, log_level=log_level,
            segmenter_kwargs={"allow_fallback": allow_fallback, "engine": engine},
        )
        return
    ensure_port_free(host, port)  # before loading a model and printing the banner
    limit_arenas()  # before any thread allocates: fewer glibc arenas, memory handed back (serving/memory.py)
    # No ONNX Runtime arena: intermediates go back to the OS after each run instead of staying
    # at the largest request's peak for the life of the server.
    options = RuntimeOptions(intra_op_threads=threads, enable_cpu_mem_arena=False)
    segmenter = Segmenter(
        model_arg, device=device, batch_size=config.max_batch, options=options,
        allow_fallback=allow_fallback, engine=engine, slide=config.slide, slide_stride=config.slide_stride,
        scores=config.scores,
    )
    try:
        app = create_app(segmenter, config)
        click.echo(
            f"fastseg serve: {segmenter.meta.model_name} ({segmenter.precision_label}, {segmenter.engine_name}) on http://{host}:{port}/ "
            f"(POST /semantic-segmentation, docs at /docs; max_batch={config.max_batch}, "
            f"queue_size={config.queue_size}, auth={'on' if config.api_key else 'off'})",
            err=True,
        )
        run_server(app, config, host=host, port=port, log_level=log_level)
    finally:
        segmenter.close()
