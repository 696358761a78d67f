"""Throughput of fastseg on Ray vs the local commands, on one machine (not a test).

Batch: ``fastseg predict`` (local) vs ``fastseg predict --ray --workers 1`` vs ``--workers 2``
(and any other --workers), each run as the real CLI in a subprocess on the same synthetic images.
Every mode runs twice, on --images and on --small images, so the fixed cost (interpreter,
Ray start-up, actor start, model load) and the per-image cost separate:
``ms/image = (t_full - t_small) / (n_full - n_small)``, ``fixed = t_full - n_full * ms/image``.
Ray overhead per image = ms/image(--ray --workers 1) - ms/image(local): both use all cores.

Serve: ``fastseg serve`` vs ``fastseg serve --ray --replicas R`` at 1/4/16 clients, through
benchmarks/load_test.py's client loop (loopback only; both servers stop by themselves).

    python benchmarks/ray_throughput.py --model /path/to/PP-LiteSeg-T [--images 200 --small 20]
        [--size 512x1024] [--workers 1 2] [--replicas 1 2] [--concurrency 1 4 16] [--requests 200]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

from fastseg.slide import parse_hw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import _free_port, _percentile, _run_level, _start_server  # noqa: E402


def _make_images(root: Path, count: int, hw: tuple[int, int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (hw[0], hw[1], 3), dtype=np.uint8)
    for i in range(count):
        cv2.imwrite(str(root / f"img{i:04d}.png"), np.roll(base, i * 7, axis=1))
    return root


def _predict_seconds(model: str, images: Path, out: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "fastseg", "predict", "--input", str(images), "--model", model,
           "--save_path", str(out), "--no-json", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return seconds


def _batch(args: argparse.Namespace, tmp: Path) -> list[dict[str, float | str]]:
    hw = parse_hw(args.size, name="--size")
    full = _make_images(tmp / "full", args.images, hw)
    small = _make_images(tmp / "small", args.small, hw)
    modes: list[tuple[str, list[str]]] = [("local", [])]
    modes += [(f"ray --workers {w}", ["--ray", "--workers", str(w)]) for w in args.workers]
    rows: list[dict[str, float | str]] = []
    for name, extra in modes:
        t_small = _predict_seconds(args.model, small, tmp / "out", extra)
        t_full = _predict_seconds(args.model, full, tmp / "out", extra)
        per_image = (t_full - t_small) / (args.images - args.small)
        rows.append({
            "mode": name, "images": args.images, "seconds": round(t_full, 3),
            "images_per_s_end_to_end": round(args.images / t_full, 2),
            "ms_per_image_steady": round(1000 * per_image, 2),
            "images_per_s_steady": round(1 / per_image, 2) if per_image > 0 else float("nan"),
            "fixed_s": round(t_full - args.images * per_image, 2),
        })
        r = rows[-1]
        print(f"{name:18s} {args.images} images in {t_full:7.2f} s = {r['images_per_s_end_to_end']:6.2f} img/s end to end; "
              f"steady {r['ms_per_image_steady']:7.2f} ms/image ({r['images_per_s_steady']} img/s), fixed {r['fixed_s']} s",
              flush=True)
    local = rows[0]["ms_per_image_steady"]
    for r in rows[1:]:
        r["ray_overhead_ms_per_image"] = round(float(r["ms_per_image_steady"]) - float(local), 2)
    one = next((r for r in rows if r["mode"] == "ray --workers 1"), None)
    if one:
        print(f"Ray overhead per image (workers=1 vs local, steady): {one['ray_overhead_ms_per_image']} ms; "
              f"fixed cost {one['fixed_s']} s vs {rows[0]['fixed_s']} s local", flush=True)
    return rows


def _start_ray_server(model: str, port: int, config: Path, replicas: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "fastseg", "serve", "--model", model, "--port", str(port), "--config", str(config),
           "--log-level", "warning", "--ray", "--replicas", str(replicas)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fastseg serve --ray exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    _stop(proc)
    raise RuntimeError("fastseg serve --ray did not start within 300 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (serve --ray shuts Serve and the local Ray down on it, as on Ctrl-C; SIGINT would be
    ignored when this script runs in the background of a shell), then kill if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _serve(args: argparse.Namespace, tmp: Path) -> list[dict[str, float | int | str]]:
    hw = parse_hw(args.size, name="--size")
    image = np.random.default_rng(0).integers(0, 256, (hw[0], hw[1], 3), dtype=np.uint8)
    body = json.dumps({"image": base64.b64encode(cv2.imencode(".png", image)[1].tobytes()).decode()}).encode()
    config = tmp / "serving.yaml"
    config.write_text(f"Serving:\n  visualize: false\n  max_batch: {args.max_batch}\n  max_wait_ms: 5\n"
                      "  queue_size: 256\n", encoding="utf-8")
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    rows: list[dict[str, float | int | str]] = []
    try:
        port = _free_port()
        servers["fastseg serve"] = (_start_server(args.model, port, config), f"http://127.0.0.1:{port}")
        for r in args.replicas:
            port = _free_port()
            servers[f"serve --ray --replicas {r}"] = (
                _start_ray_server(args.model, port, config, r), f"http://127.0.0.1:{port}"
            )
        for _, url in servers.values():  # warm up every replica's session
            asyncio.run(_run_level(url, body, concurrency=4, requests=8, time_limit=60, timings=[]))
        for conc in args.concurrency:
            for name, (_, url) in servers.items():  # alternate, so drifting load hits all alike
                lat, failed, lost, sent, secs = asyncio.run(
                    _run_level(url, body, concurrency=conc, requests=args.requests, time_limit=args.time_limit,
                               timings=[])
                )
                row = {"server": name, "concurrency": conc, "sent": sent, "ok": len(lat), "failed": failed,
                       "lost": lost, "throughput_rps": round(len(lat) / secs, 2),
                       "p50_ms": round(_percentile(lat, 50), 2), "p99_ms": round(_percentile(lat, 99), 2)}
                rows.append(row)
                print(f"{name:26s} c={conc:<3} ok={row['ok']:<4} failed={failed} lost={lost} "
                      f"{row['throughput_rps']:8.1f} req/s  p50 {row['p50_ms']:8.2f} ms  p99 {row['p99_ms']:8.2f} ms",
                      flush=True)
    finally:
        for proc, _ in servers.values():
            _stop(proc)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="converted model dir or zoo name")
    parser.add_argument("--images", type=int, default=200, help="images in the full batch run")
    parser.add_argument("--small", type=int, default=20, help="images in the short run (separates fixed costs)")
    parser.add_argument("--size", default="512x1024", help="synthetic image HxW")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=200, help="requests per server and concurrency level")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per level, at most")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args()
    if args.small >= args.images:
        parser.error("--small must be below --images")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        batch = [] if args.skip_batch else _batch(args, tmp)
        serve = [] if args.skip_serve else _serve(args, tmp)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
            "model": args.model, "size": args.size, "batch": batch, "serve": serve,
        }, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
