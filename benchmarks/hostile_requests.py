"""Hostile traffic against a running ``fastseg serve`` on loopback; prints counts and peak RSS.

    python benchmarks/hostile_requests.py --url http://127.0.0.1:8080 --pid <server pid> \
        --image some.jpg [--slow 32 --slow-seconds 30]

Three rounds, each bounded (request counts and time limits are fixed; nothing loops forever):
1. 8 PNG decompression bombs at once (a real PNG whose first IDAT length is 0xFFFFFFFF), then
   4 PNGs whose stream goes on for two more images past the image's rows (``overflowing_png``);
2. 4 requests with ``"targetSize": [8000, 4000]`` on a 64x48 image at once;
3. ``--slow`` connections dripping one body byte every 2 s while one normal request per second
   is sent for ``--slow-seconds``: how many of those got 200, and how fast.
The server's peak RSS (VmHWM, Linux /proc) is read before and after. Loopback only.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np

ENDPOINT = "/semantic-segmentation"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def png_bomb() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    data = bytearray(cv2.imencode(".png", noise)[1].tobytes())
    at = data.find(b"IDAT")
    data[at - 4 : at] = b"\xff\xff\xff\xff"
    return bytes(data)


def overflowing_png(side: int = 1024) -> bytes:
    """A valid PNG header over a zlib stream holding the image's rows (every row Sub, as
    OpenCV writes them) and then two more images' rows: both halves of fastseg's split inflate
    past the image (libpng warns and decodes the image; fastseg's split crashed on it before
    session 15)."""
    rng = np.random.default_rng(1)
    rows = []
    for _ in range(3):
        smooth = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (side, side), interpolation=cv2.INTER_CUBIC)
        rgb = np.clip(smooth.astype(np.int16) + rng.integers(-3, 4, smooth.shape), 0, 255).astype(np.uint8)[:, :, ::-1]
        flat = rgb.reshape(side, -1).astype(np.int16)
        sub = ((flat - np.pad(flat, ((0, 0), (3, 0)))[:, :-3]) % 256).astype(np.uint8)
        rows.append(np.concatenate([np.ones((side, 1), np.uint8), sub], axis=1).tobytes())

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows), 1)) + chunk(b"IEND", b"")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def slow_sender(host: str, port: int, stop: threading.Event, answers: list[bytes]) -> None:
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(
            f"POST {ENDPOINT} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n".encode()
        )
        while not stop.is_set():
            try:
                sock.sendall(b" ")
            except OSError:
                break
            stop.wait(2.0)
        sock.settimeout(5)
        try:
            answers.append(sock.recv(64))
        except OSError:
            answers.append(b"")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--slow", type=int, default=32)
    parser.add_argument("--slow-seconds", type=float, default=30.0)
    args = parser.parse_args()
    parts = urlsplit(args.url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loopback only")
    good = {"image": b64(args.image.read_bytes()), "visualize": False}
    client = httpx.Client(timeout=60)
    report: dict[str, object] = {"peak_rss_mb_before": round(peak_rss_mb(args.pid), 1)}

    def post(body: object) -> httpx.Response:
        return client.post(args.url + ENDPOINT, json=body)

    with ThreadPoolExecutor(8) as pool:
        started = time.perf_counter()
        bombs = list(pool.map(post, [{"image": b64(png_bomb())}] * 8))
        report["bombs"] = {"statuses": sorted({r.status_code for r in bombs}), "seconds": round(time.perf_counter() - started, 2)}
        started = time.perf_counter()
        overflowing = list(pool.map(post, [{"image": b64(overflowing_png()), "visualize": False}] * 4))
        report["overflowing_streams"] = {"statuses": sorted({r.status_code for r in overflowing}),
                                         "seconds": round(time.perf_counter() - started, 2)}
        small = cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1].tobytes()
        huge = list(pool.map(post, [{"image": b64(small), "targetSize": [8000, 4000]}] * 4))
        report["huge_target_size"] = {"statuses": sorted({r.status_code for r in huge}), "message": huge[0].json()["errorMsg"]}
    report["peak_rss_mb_after_bombs"] = round(peak_rss_mb(args.pid), 1)

    stop, answers = threading.Event(), list[bytes]()
    threads = [
        threading.Thread(target=slow_sender, args=(parts.hostname, parts.port, stop, answers), daemon=True)
        for _ in range(args.slow)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    normal: list[tuple[int, float]] = []
    deadline = time.monotonic() + args.slow_seconds
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        normal.append((post(good).status_code, time.perf_counter() - t0))
        time.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))
    stop.set()
    for thread in threads:
        thread.join(timeout=70)
    report["slow_senders"] = {
        "connections": args.slow,
        "normal_requests": len(normal),
        "normal_200": sum(1 for s, _ in normal if s == 200),
        "normal_max_seconds": round(max((d for _, d in normal), default=0.0), 2),
        "slow_answers": sorted({a[:12].decode(errors="replace") for a in answers}),
    }
    report["peak_rss_mb_after_all"] = round(peak_rss_mb(args.pid), 1)
    report["health"] = client.get(args.url + "/health").status_code
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
