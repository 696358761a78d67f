"""The bodies of ``fastseg predict --ray`` and ``fastseg serve --ray`` (fastseg.cli only parses the
options and calls these), with the same progress bar and summary line as the local commands."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from fastseg.processing import TargetSize
from fastseg.ray.devices import require_ray


def wait_until_stopped() -> None:
    """Block until Ctrl-C or SIGTERM (a container stop, systemd), so either one reaches the caller's
    shutdown path (Serve drains its replicas) instead of SIGTERM killing the driver outright.

    SIGINT is given its default handler too: a process started in the background of a
    non-interactive shell inherits SIGINT *ignored*, and Ctrl-C would then never arrive (that,
    not Serve, is why an earlier benchmark's Ctrl-C "took over 90 s"). Both previous handlers
    are restored on the way out.
    """
    import signal
    import time

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_predict(
    *,
    input_: str,
    model: str | None,
    pipeline: str | None,
    device: str,
    save_path: str,
    batch_size: int | None,
    target_size: TargetSize | None,
    overlay: bool,
    no_json: bool,
    workers: int | None,
    address: str | None,
    segmenter_kwargs: dict[str, Any],
) -> None:
    """Segment on Ray Data; exit 1 and list the failed inputs when some fail."""
    require_ray("'fastseg predict --ray' (or a device list such as gpu:0,1)")
    from tqdm import tqdm

    from fastseg.output_names import printable
    from fastseg.ray.batch import list_inputs, segment
    from fastseg.model_resolution import DEFAULT_MODEL

    if pipeline is not None:
        raise click.UsageError("--pipeline is not supported with --ray: give --model, --batch_size, --target_size.")
    model_arg: str | Path = model or DEFAULT_MODEL
    if Path(str(model_arg)).is_dir():
        model_arg = Path(str(model_arg))
    files, missing = list_inputs(input_)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our bar and summary replace its progress logs
    with tqdm(total=len(files) + len(missing), unit="img", desc="ray", disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        report = segment(
            input_, model_arg, save_path=save_path, address=address, workers=workers, batch_size=batch_size or 1,
            device=device, target_size=target_size, overlay=overlay, save_json=not no_json,
            on_progress=progress, **segmenter_kwargs,
        )
    plan = report.plan
    threads = f" x {plan.intra_op_threads} thread(s)" if plan.intra_op_threads else ""
    click.echo(
        f"{report.succeeded} image(s) in {report.seconds:.2f} s ({1000 * report.seconds / max(report.total, 1):.1f} "
        f"ms/image, including Ray start-up, reading and saving) with {report.model_name} on Ray: "
        f"{plan.workers} worker(s) on {plan.device}{threads} -> {save_path}"
        + (f"; {len(report.failed)} failed" if report.failed else "")
    )
    if report.failed:
        click.echo(f"Failed inputs ({len(report.failed)}):", err=True)
        for path, reason in report.failed:
            click.echo(f"  {printable(path)}: {reason}", err=True)
        sys.exit(1)


def run_serve(
    *,
    model: str,
    device: str,
    host: str,
    port: int,
    config: Any,
    replicas: int | None,
    max_ongoing_requests: int | None,
    address: str | None,
    threads: int | None,
    log_level: str,
    segmenter_kwargs: dict[str, Any] | None = None,
) -> None:
    """Deploy ``create_app`` on Ray Serve and block until Ctrl-C or SIGTERM (then shut Serve down)."""
    require_ray("'fastseg serve --ray' (or a device list such as gpu:0,1)")
    from fastseg.ray.cluster import ray_session, worker_error
    from fastseg.engines.ort import RuntimeOptions

    model_arg: str | Path = Path(model) if Path(model).is_dir() else model
    with ray_session(address=address, device=device):
        from ray import serve

        from fastseg.ray.serve import DEPLOYMENT_NAME, build_serve_app

        kwargs: dict[str, Any] = dict(segmenter_kwargs or {})
        if threads is not None:
            kwargs["options"] = RuntimeOptions(intra_op_threads=threads)
        app = build_serve_app(
            model_arg, config=config, replicas=replicas, max_ongoing_requests=max_ongoing_requests, device=device,
            **kwargs,
        )
        # serve.start's config covers Serve's controller and proxy; serve.run's covers the application's
        # replicas, which otherwise log every request at INFO whatever --log-level says.
        logging_config = {"log_level": log_level.upper()}
        serve.start(http_options={"host": host, "port": port}, logging_config=logging_config)
        logging.getLogger("ray.serve").setLevel(log_level.upper())
        try:
            try:
                serve.run(app, name=DEPLOYMENT_NAME, route_prefix="/", logging_config=logging_config)
            except Exception as exc:  # a replica that cannot start (device, model): say why in one line
                report = str(exc)
                try:  # serve.run's error names no cause; the deployment's status holds the traceback
                    report += "\n" + serve.status().applications[DEPLOYMENT_NAME].deployments[DEPLOYMENT_NAME].message
                except Exception:  # noqa: BLE001 - the status is only a better message
                    pass
                cause = worker_error(report)
                if cause is None:
                    raise
                raise cause from None
            click.echo(
                f"fastseg serve --ray: {model} on http://{host}:{port}/ (POST /semantic-segmentation, docs at /docs; "
                f"Ray Serve batching max_batch={config.max_batch}, max_wait_ms={config.max_wait_ms:g}; "
                f"auth={'on' if config.api_key else 'off'}). Ctrl-C or SIGTERM stops.",
                err=True,
            )
            wait_until_stopped()
        finally:
            serve.shutdown()  # type: ignore[no-untyped-call]
