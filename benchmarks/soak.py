"""Closed-loop soak of a running ``fastseg serve`` on loopback: counts, statuses and RSS over time.

    python benchmarks/soak.py --url http://127.0.0.1:8080 --pid <server pid> --image img.jpg \
        --clients 16 --seconds 60

Each of ``--clients`` threads sends one request at a time until ``--seconds`` have passed (so
the run ends by itself). Reported: sent, answered (any HTTP status), lost (no response),
statuses, how fast 503s came back (with Retry-After), and the server's RSS sampled every 5 s
(VmRSS) plus its peak (VmHWM). Latency under a shared machine is not the point: counts are.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx


def proc_status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loopback only")
    body = json.dumps({"image": base64.b64encode(args.image.read_bytes()).decode("ascii"), "visualize": False})
    lock = threading.Lock()
    statuses: collections.Counter[int] = collections.Counter()
    lost: collections.Counter[str] = collections.Counter()
    busy_seconds: list[float] = []
    retry_after_missing = 0
    deadline = time.monotonic() + args.seconds

    def client() -> None:
        nonlocal retry_after_missing
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    resp = http.post(
                        args.url + "/semantic-segmentation", content=body, headers={"Content-Type": "application/json"}
                    )
                except httpx.HTTPError as exc:
                    with lock:
                        lost[type(exc).__name__] += 1
                    continue
                with lock:
                    statuses[resp.status_code] += 1
                    if resp.status_code == 503:
                        busy_seconds.append(time.perf_counter() - started)
                        retry_after_missing += "Retry-After" not in resp.headers
                if resp.status_code == 503:
                    time.sleep(float(resp.headers.get("Retry-After", "1")))

    rss: list[float] = [proc_status_mb(args.pid, "VmRSS")]
    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        time.sleep(5)
        rss.append(proc_status_mb(args.pid, "VmRSS"))
    for thread in threads:
        thread.join()
    answered = sum(statuses.values())
    busy_seconds.sort()
    print(json.dumps({
        "clients": args.clients,
        "seconds": args.seconds,
        "sent": answered + sum(lost.values()),
        "answered": answered,
        "lost": dict(lost),
        "statuses": dict(sorted(statuses.items())),
        "busy_503_max_seconds": round(busy_seconds[-1], 3) if busy_seconds else None,
        "busy_503_without_retry_after": retry_after_missing,
        "rss_mb_samples": rss,
        "peak_rss_mb": proc_status_mb(args.pid, "VmHWM"),
        "health": httpx.get(args.url + "/health", timeout=10).status_code,
    }, indent=2))


if __name__ == "__main__":
    main()
