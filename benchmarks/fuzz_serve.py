"""Fuzz ``fastseg serve`` over loopback: malformed JSON, wrong field types, corrupt and truncated
images, decode bombs, bad URLs, odd targetSize values, wrong methods, paths and content types,
chunked bodies. Every answer must be a 2xx/4xx (or 503 with Retry-After when busy), never a
5xx, and the server's log must hold no traceback.

Starts ``fastseg serve`` itself on a free 127.0.0.1 port (this interpreter and PYTHONPATH), or
fuzzes ``--url`` (loopback only). Bounded: ``--requests`` (default 1200) and ``--seconds``
(default 420), seeded (``--seed``) so a failure reproduces. Prints one JSON report: requests
sent, statuses, 5xx, tracebacks, max and p99 latency; exit 1 on any 5xx or traceback.

    python benchmarks/fuzz_serve.py --model /work/models/PP-LiteSeg-T --requests 1200 --seconds 420
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
from PIL import Image
from serve_child import wait_until_healthy

ENDPOINT = "/semantic-segmentation"
Request = tuple[str, str, bytes | None, dict[str, str]]  # method, path, body, headers


def _images(rng: random.Random) -> dict[str, bytes]:
    """A few small valid files in every accepted format, plus a progressive JPEG to mutate."""
    img = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 255, (48, 64, 3), np.uint8)
    out = {ext: cv2.imencode(ext, img)[1].tobytes() for ext in (".png", ".jpg", ".bmp", ".webp")}
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", progressive=True)
    out["progressive"] = buf.getvalue()
    return out


def _scan_bomb(data: bytes, scans: int) -> bytes:
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    end = data.rindex(b"\xff\xd9")
    return data[: starts[-1]] + data[starts[-1] : end] * scans + data[end:]


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """Truncate, flip bytes, splice in junk, or repeat a slice."""
    b = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(b[: rng.randrange(len(b))])
    if kind == 1:
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 2:
        at = rng.randrange(len(b))
        return bytes(b[:at] + rng.randbytes(rng.randint(1, 64)) + b[at:])
    at, n = rng.randrange(len(b)), rng.randint(1, 32)
    return bytes(b[:at] + b[at : at + n] * rng.randint(2, 200) + b[at:])


ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**63, -(2**63), 1e400, -1e400, 0.5, "", " ", "0", "-1", "null",
    "\u0000", "\ud7ff\ue000", "é" * 50, [], {}, [1], [1, 2, 3], [-1, -1], [0, 0], [16384, 16385], [8000, 4000],
    {"a": 1}, [[1]], "A" * 10_000,
]
BAD_URLS = [
    "http://[x]/", "http://[::1", "http://a]b/", "http://127.0.0.1:99999/", "http://localhost/a.png",
    "https://169.254.169.254/latest", "ftp://example.com/a.png", "http://ex\u00e4mple.com/", "http://a b/",
    "http://" + "a" * 9000, "file:///etc/passwd", "data:image/png;base64,AAAA", "//x", "http:", "https://",
]


def _json_request(rng: random.Random, images: dict[str, bytes]) -> Any:
    """A request document: valid, wrong-typed, or with a corrupt image, a bomb or a bad URL."""
    base = rng.choice([".png", ".jpg", ".bmp", ".webp"])
    choice = rng.randrange(10)
    if choice == 0:
        image: Any = base64.b64encode(images[base]).decode()  # valid
    elif choice in (1, 2, 3):
        image = base64.b64encode(_mutate(images[rng.choice(list(images))], rng)).decode()
    elif choice == 4:
        image = base64.b64encode(_scan_bomb(images["progressive"], rng.choice([65, 200, 5000]))).decode()
    elif choice == 5:
        image = rng.choice(BAD_URLS)
    elif choice == 6:
        image = base64.b64encode(rng.randbytes(rng.randint(0, 2000))).decode()
    elif choice == 7:
        text = base64.b64encode(images[base]).decode()
        image = text[: rng.randrange(len(text))] + rng.choice(["", "=", "==", "!", "\n", "*"])
    else:
        image = rng.choice(ODD_VALUES)
    doc: dict[str, Any] = {"image": image}
    for key in ("targetSize", "visualize", "labelMapFormat"):
        if rng.random() < 0.5:
            doc[key] = rng.choice(ODD_VALUES + ["png", "json", "PNG", 256, 64, -1, [64, 48], [-1, 64]])
    if rng.random() < 0.1:
        doc[rng.choice(["extra", "Image", "image ", "\u0000"])] = rng.choice(ODD_VALUES)
    if rng.random() < 0.05:
        return rng.choice([doc["image"], [doc], None, 1, "x"])
    return doc


def _raw_body(rng: random.Random) -> bytes:
    """A body that is not a JSON document: junk, bad UTF-8, deep nesting, truncation."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 4096))
    if kind == 1:
        return b'{"image": "\xff\xfe\xfd"}'
    if kind == 2:
        depth = rng.choice([100, 1000, 100_000])
        return b'{"image": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == 3:
        return b'{"image": "' + b"A" * rng.randint(0, 100) + rng.choice([b"", b'"', b'",', b'"}}'])
    if kind == 4:
        return b""
    return json.dumps({"image": "x" * rng.randint(1, 10)}).encode()[: rng.randint(1, 20)]


def make_request(rng: random.Random, images: dict[str, bytes]) -> Request:
    """One fuzzed request: mostly the inference endpoint, some other routes, methods, headers."""
    roll = rng.random()
    headers = {"Content-Type": "application/json"}
    if roll < 0.65:
        return "POST", ENDPOINT, json.dumps(_json_request(rng, images)).encode(), headers
    if roll < 0.8:
        headers["Content-Type"] = rng.choice(["application/json", "text/plain", "multipart/form-data", "", "image/png"])
        return "POST", ENDPOINT, _raw_body(rng), headers
    if roll < 0.9:
        method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
        return method, rng.choice([ENDPOINT, "/health", "/info", "/"]), None, {}
    path = rng.choice(["/health", "/info", "/", "/docs", "/redoc", "/openapi.json", "/static/../../etc/passwd",
                       "/%00", "/semantic-segmentation/", "/" + "a" * 3000, "/static/app.js", "/nope"])
    return "GET", path, None, {}


def _chunks(body: bytes, rng: random.Random) -> Any:
    def gen() -> Any:
        pos = 0
        while pos < len(body):
            step = rng.randint(1, 4096)
            yield body[pos : pos + step]
            pos += step

    return gen()


def fuzz(url: str, requests: int, seconds: float, seed: int, on_answer: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Send up to ``requests`` fuzzed requests to ``url`` within ``seconds``; the tallies."""
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"fuzz_serve.py fuzzes loopback servers only, not {host!r}")
    rng = random.Random(seed)
    images = _images(rng)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    server_errors: list[dict[str, Any]] = []
    missing_retry_after = 0
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(requests):
            if time.monotonic() > deadline:
                break
            method, path, body, headers = make_request(rng, images)
            content: Any = body
            if body is not None and rng.random() < 0.1:
                content = _chunks(body, rng)  # Transfer-Encoding: chunked
            started = time.monotonic()
            try:
                resp = client.request(method, path, content=content, headers=headers)
                status = resp.status_code
                if status == 503 and "retry-after" not in resp.headers:
                    missing_retry_after += 1
                if status >= 500 and status != 503:
                    server_errors.append({"i": i, "status": status, "path": path, "body": (body or b"")[:200].decode("latin-1"),
                                          "answer": resp.text[:300]})
            except httpx.HTTPError as exc:
                status = -1
                server_errors.append({"i": i, "error": repr(exc), "path": path})
            latencies.append(time.monotonic() - started)
            statuses[status] += 1
            if on_answer:
                on_answer(i)
    lat = sorted(latencies)
    return {
        "sent": len(latencies),
        "statuses": dict(sorted(statuses.items())),
        "5xx_other_than_503": sum(n for s, n in statuses.items() if s >= 500 and s != 503),
        "no_answer": statuses.get(-1, 0),
        "503_without_retry_after": missing_retry_after,
        "max_latency_s": round(lat[-1], 3) if lat else None,
        "p99_latency_s": round(lat[int(0.99 * (len(lat) - 1))], 3) if lat else None,
        "server_errors": server_errors[:20],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model for a server started here (zoo name or directory)")
    ap.add_argument("--weights", default=None, help="passed to fastseg serve (e.g. reference)")
    ap.add_argument("--url", help="fuzz a running loopback server instead")
    ap.add_argument("--requests", type=int, default=1200)
    ap.add_argument("--seconds", type=float, default=420.0)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not args.url and not args.model:
        raise SystemExit("pass --model (a server is started) or --url (loopback)")
    proc: subprocess.Popen[bytes] | None = None
    log = tempfile.TemporaryFile()
    url = args.url
    if url is None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "fastseg", "serve", "--model", args.model, "--port", str(port), "--log-level", "info"]
        if args.weights:
            cmd += ["--weights", args.weights]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_until_healthy(url, proc, lambda: (log.seek(0), log.read())[1])
    try:
        report = fuzz(url, args.requests, args.seconds, args.seed)
        report["health_after"] = httpx.get(url + "/health", timeout=10).status_code
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if proc is not None:
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
        report["server_tracebacks"] = text.count("Traceback (most recent call last)")
        report["server_log_lines"] = len(text.splitlines())
        if report["server_tracebacks"]:
            start = text.index("Traceback (most recent call last)")
            report["first_traceback"] = text[start : start + 3000]
    out = json.dumps(report, indent=1)
    print(out)
    if args.json:
        args.json.write_text(out + "\n", encoding="utf-8")
    bad = report["5xx_other_than_503"] or report["no_answer"] or report.get("server_tracebacks", 0)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
