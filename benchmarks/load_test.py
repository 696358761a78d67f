"""Bounded loopback load test of ``fastseg serve``.

Starts ``fastseg serve`` itself on a free 127.0.0.1 port (once with dynamic batching, once with
max_batch=1), sends a fixed number of requests per concurrency level (stopping early at a time
limit), and reports throughput, p50/p99 latency, failed (non-200) and lost (no response)
requests. It also times the same image through an in-process ``Segmenter`` to give the serving
overhead. Only loopback is ever contacted; every phase stops by itself.

    python benchmarks/load_test.py --model path/to/converted_dir [--image img.png]
        [--requests 200] [--time-limit 60] [--concurrency 1 4 16] [--max-batch 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np

from fastseg.segmenter import Segmenter


@dataclass(frozen=True)
class LevelResult:
    max_batch: int
    concurrency: int
    sent: int
    ok: int
    failed: int
    lost: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    batches: int
    mean_batch: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _server_timing(header: str) -> dict[str, float]:
    """``Server-Timing: decode;dur=1.2, infer;dur=3.4;desc="batch of 1", ...`` -> {name: ms}."""
    out: dict[str, float] = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";dur=")
        if rest:
            out[name] = float(rest.split(";")[0])
    return out


async def _run_level(
    url: str, body: bytes, *, concurrency: int, requests: int, time_limit: float, timings: list[dict[str, float]]
) -> tuple[list[float], int, int, int, float]:
    latencies: list[float] = []
    failed = lost = 0
    next_index = 0
    deadline = time.perf_counter() + time_limit
    headers = {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=time_limit, limits=limits) as client:

        async def worker() -> None:
            nonlocal next_index, failed, lost
            while next_index < requests and time.perf_counter() < deadline:
                next_index += 1
                t0 = time.perf_counter()
                try:
                    resp = await client.post("/semantic-segmentation", content=body, headers=headers)
                except httpx.HTTPError:
                    lost += 1
                    continue
                if resp.status_code == 200 and resp.content.startswith(b'{"logId"') and b'"errorCode":0' in resp.content[:80]:
                    latencies.append((time.perf_counter() - t0) * 1000.0)
                    timings.append(_server_timing(resp.headers.get("server-timing", "")))
                else:
                    failed += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return latencies, failed, lost, next_index, seconds


def _start_server(model: str, port: int, config: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "fastseg", "serve", "--model", model, "--port", str(port),
           "--config", str(config), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fastseg serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("fastseg serve did not start within 120 s")


def _in_process_ms(model: str, data: bytes, *, iterations: int) -> tuple[float, float]:
    """Median ms of predict_images on a decoded array, and of decode (cv2) + predict_images."""
    seg = Segmenter(Path(model) if Path(model).is_dir() else model, device="cpu")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    try:
        for _ in range(3):
            seg.predict_images([image])
        plain, with_decode = [], []
        for _ in range(iterations):
            t0 = time.perf_counter()
            seg.predict_images([image])
            t1 = time.perf_counter()
            seg.predict_images([cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)])
            t2 = time.perf_counter()
            plain.append((t1 - t0) * 1000.0)
            with_decode.append((t2 - t1) * 1000.0)
    finally:
        seg.close()
    return statistics.median(plain), statistics.median(with_decode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="converted model dir or zoo name")
    parser.add_argument("--image", type=Path, default=None, help="image file (default: synthetic 512x256)")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per level, at most")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--visualize", action="store_true", help="also return the JPEG colour map")
    parser.add_argument("--label-format", choices=["json", "png"], default="json", help="labelMapFormat to request")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args()

    if args.image is not None:
        data = args.image.read_bytes()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    else:
        image = np.random.default_rng(0).integers(0, 256, (256, 512, 3), dtype=np.uint8)
        data = cv2.imencode(".png", image)[1].tobytes()
    request: dict[str, str] = {"image": base64.b64encode(data).decode("ascii")}
    if args.label_format != "json":
        request["labelMapFormat"] = args.label_format
    body = json.dumps(request).encode()

    in_proc_ms, in_proc_bytes_ms = _in_process_ms(args.model, data, iterations=max(10, min(args.requests, 50)))
    print(f"in-process Segmenter, batch 1: predict_images on a decoded array: median {in_proc_ms:.2f} ms; "
          f"decode file bytes + predict_images: median {in_proc_bytes_ms:.2f} ms")

    # Both servers run side by side and the levels alternate between them, so drifting load
    # from other processes on a shared machine hits both configurations alike.
    results: list[LevelResult] = []
    server_side: dict[str, float] = {}
    batch_sizes = tuple(dict.fromkeys((args.max_batch, 1)))  # one server per setting: --max-batch 1 had left one running
    with tempfile.TemporaryDirectory() as tmp:
        servers: dict[int, tuple[subprocess.Popen[bytes], str]] = {}
        try:
            for max_batch in batch_sizes:
                config = Path(tmp) / f"serving-{max_batch}.yaml"
                config.write_text(
                    f"Serving:\n  visualize: {str(args.visualize).lower()}\n  max_batch: {max_batch}\n"
                    f"  max_wait_ms: 5\n  queue_size: 256\n",
                    encoding="utf-8",
                )
                port = _free_port()
                servers[max_batch] = (_start_server(args.model, port, config), f"http://127.0.0.1:{port}")
                warm = servers[max_batch][1]
                asyncio.run(_run_level(warm, body, concurrency=2, requests=6, time_limit=30, timings=[]))
            for conc in args.concurrency:
                for max_batch in batch_sizes:
                    url = servers[max_batch][1]
                    before = httpx.get(url + "/info").json()["batching"]
                    timings: list[dict[str, float]] = []
                    lat, failed, lost, sent, secs = asyncio.run(
                        _run_level(url, body, concurrency=conc, requests=args.requests, time_limit=args.time_limit,
                                   timings=timings)
                    )
                    if conc == 1 and max_batch == 1:
                        server_side = {
                            k: round(statistics.median(t[k] for t in timings if k in t), 2)
                            for k in ("read", "decode", "queue", "infer", "encode", "total")
                        }
                    after = httpx.get(url + "/info").json()["batching"]
                    batches = after["batches"] - before["batches"]
                    level = LevelResult(
                        max_batch=max_batch, concurrency=conc, sent=sent, ok=len(lat), failed=failed, lost=lost,
                        seconds=round(secs, 3), throughput_rps=round(len(lat) / secs, 2),
                        p50_ms=round(_percentile(lat, 50), 2), p99_ms=round(_percentile(lat, 99), 2),
                        batches=batches, mean_batch=round((after["images"] - before["images"]) / max(batches, 1), 2),
                    )
                    results.append(level)
                    print(
                        f"max_batch={max_batch:<2} c={conc:<3} sent={sent:<4} ok={level.ok:<4} failed={failed} "
                        f"lost={lost}  {level.throughput_rps:8.1f} req/s  p50 {level.p50_ms:8.2f} ms  "
                        f"p99 {level.p99_ms:8.2f} ms  mean batch {level.mean_batch}"
                    )
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)

    def pick(mb: int, c: int) -> LevelResult | None:
        return next((r for r in results if r.max_batch == mb and r.concurrency == c), None)

    top = max(args.concurrency)
    batched, single = pick(args.max_batch, top), pick(1, top)
    one = pick(1, 1)
    summary: dict[str, float] = {"in_process_ms": round(in_proc_ms, 3), "in_process_from_bytes_ms": round(in_proc_bytes_ms, 3)}
    if batched and single:
        summary["batching_gain"] = round(batched.throughput_rps / single.throughput_rps, 3)
        print(f"dynamic batching gain at c={top}: x{summary['batching_gain']:.2f} throughput "
              f"(max_batch={args.max_batch} vs 1)")
    if one:
        summary["serving_overhead_pct"] = round(100 * (one.p50_ms - in_proc_ms) / in_proc_ms, 1)
        summary["serving_overhead_vs_bytes_pct"] = round(100 * (one.p50_ms - in_proc_bytes_ms) / in_proc_bytes_ms, 1)
        print(f"serving overhead at c=1 (max_batch=1): p50 {one.p50_ms:.2f} ms vs in-process {in_proc_ms:.2f} ms "
              f"(decoded array) = {summary['serving_overhead_pct']:+.1f}%; vs {in_proc_bytes_ms:.2f} ms "
              f"(from file bytes) = {summary['serving_overhead_vs_bytes_pct']:+.1f}%")
    if server_side:
        http_ms = one.p50_ms - server_side["total"] if one else float("nan")
        summary["server_side_ms"] = server_side  # type: ignore[assignment]
        summary["server_overhead_pct"] = round(
            100 * (server_side["total"] - server_side["infer"]) / server_side["infer"], 1
        )
        print(f"server side at c=1 (medians, ms): {server_side}; outside inference: "
              f"{summary['server_overhead_pct']:+.1f}% of infer; HTTP+client ≈ {http_ms:.2f} ms")
    if args.json:
        args.json.write_text(json.dumps({
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "note": "shared CPU"},
            "model": args.model, "image_hw": list(image.shape[:2]), "visualize": args.visualize,
            "label_format": args.label_format,
            "summary": summary, "levels": [asdict(r) for r in results],
        }, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
