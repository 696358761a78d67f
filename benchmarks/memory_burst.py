"""Peak and settled RSS of ``fastseg serve`` under a burst of large photos and scan-bomb JPEGs.

Starts ``fastseg serve`` itself on a free 127.0.0.1 port (the interpreter and PYTHONPATH of this
process, so any checkout can be measured), warms it with one photo, then sends ``--photos``
photos (``--side`` x ``--side``, made from ``--image``) and ``--bombs`` progressive JPEGs of
6000x6000 with one AC scan repeated ``--bomb-scans`` times, all at once. Samples the server's
RSS every 50 ms and reports: RSS idle before, peak RSS (VmHWM), RSS 1/5/10 s after the last
answer, the status codes, the seconds to answer, the CPU-seconds the server used after the
answers (work that outlived its requests), and whether a normal request still gets 200.
``--clients/--requests`` instead runs a steady load of the photo and reports req/s and peak RSS;
with ``--seconds`` each client sends until that time is up (at most ``--requests`` in all).
"Back to idle" is the first moment after the answers when RSS is within 10% + 50 MB of the idle
RSS; ``fastseg serve`` is one process (no children), so its VmHWM is the tree's peak.
Loopback only; every phase is bounded in count and time.

    python benchmarks/memory_burst.py --model DIR --image street.jpg [--config serving.yaml]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from PIL import Image
from serve_child import wait_until_healthy

ENDPOINT = "/semantic-segmentation"


def scan_bomb(width: int, height: int, scans: int) -> bytes:
    """A valid progressive JPEG of a flat image whose last AC scan is repeated up to ``scans``."""
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    end = data.rindex(b"\xff\xd9")
    last = data[starts[-1] : end]
    return data[: starts[-1]] + last * (scans - len(starts) + 1) + data[end:]


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sampler(threading.Thread):
    """RSS (MB) of ``pid`` every 50 ms into ``samples`` as (monotonic time, MB)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append((time.monotonic(), _status_kb(self.pid, "VmRSS") / 1024))
            except OSError:
                return
            time.sleep(0.05)

    def at(self, when: float) -> float:
        later = [mb for t, mb in self.samples if t >= when]
        return later[0] if later else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", required=True, type=Path)
    ap.add_argument("--config", default=None)
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--bombs", type=int, default=4)
    ap.add_argument("--bomb-scans", type=int, default=100_000)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=0, help="steady load instead of a burst")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=0.0, help="steady load: each client sends until this time is up")
    ap.add_argument("--photo-hw", default=None, help="HxW of the steady-load photo (default: side x side)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    source = cv2.imread(str(args.image), cv2.IMREAD_COLOR)
    if source is None:
        raise SystemExit(f"cannot read {args.image}")
    from fastseg.slide import parse_hw

    h, w = parse_hw(args.photo_hw, name="--photo-hw") if args.photo_hw else (args.side, args.side)
    photo = cv2.imencode(".jpg", cv2.resize(source, (w, h)), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    photo_body = json.dumps({"image": base64.b64encode(photo).decode()}).encode()
    bomb_body = json.dumps({"image": base64.b64encode(scan_bomb(6000, 6000, args.bomb_scans)).decode()}).encode()

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "fastseg", "serve", "--model", args.model, "--port", str(port), "--log-level", "warning"]
    if args.config:
        cmd += ["--config", args.config]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    report: dict[str, Any] = {"cmd": cmd, "photo_bytes": len(photo), "bomb_bytes": len(bomb_body)}

    def post(body: bytes, timeout: float = 120) -> tuple[int, float]:
        started = time.monotonic()
        try:
            resp = httpx.post(url + ENDPOINT, content=body, headers={"Content-Type": "application/json"}, timeout=timeout)
            return resp.status_code, time.monotonic() - started
        except httpx.HTTPError:
            return -1, time.monotonic() - started

    try:
        wait_until_healthy(url, proc, lambda: proc.communicate()[1])
        report["warm_status"] = post(photo_body)[0]
        time.sleep(2)
        report["idle_rss_mb"] = _status_kb(proc.pid, "VmRSS") / 1024
        report["idle_hwm_mb"] = _status_kb(proc.pid, "VmHWM") / 1024
        sampler = Sampler(proc.pid)
        sampler.start()
        started = time.monotonic()
        if args.clients:
            if args.seconds:
                stop_at, budget, lock = started + args.seconds, [args.requests], threading.Lock()
                answers = []

                def client(_: int) -> None:
                    while time.monotonic() < stop_at:
                        with lock:
                            if budget[0] <= 0:
                                return
                            budget[0] -= 1
                        answer = post(photo_body)
                        with lock:
                            answers.append(answer)

                with ThreadPoolExecutor(args.clients) as pool:
                    list(pool.map(client, range(args.clients)))
            else:
                with ThreadPoolExecutor(args.clients) as pool:
                    answers = list(pool.map(lambda _: post(photo_body), range(args.requests)))
            wall = time.monotonic() - started
            ok = sum(1 for a in answers if a[0] == 200)
            lat = sorted(t for s, t in answers if s == 200)
            report["steady"] = {
                "clients": args.clients, "requests": len(answers), "wall_s": round(wall, 2),
                "req_per_s": round(len(answers) / wall, 3), "ok_per_s": round(ok / wall, 3),
                "p50_s": round(lat[len(lat) // 2], 2) if lat else None,
                "statuses": sorted({s: sum(1 for a in answers if a[0] == s) for s, _ in answers}.items()),
            }
        else:
            bodies = [photo_body] * args.photos + [bomb_body] * args.bombs
            with ThreadPoolExecutor(len(bodies)) as pool:
                answers = list(pool.map(post, bodies))
            report["photo_answers"] = [[s, round(t, 2)] for s, t in answers[: args.photos]]
            report["bomb_answers"] = [[s, round(t, 2)] for s, t in answers[args.photos :]]
        done = time.monotonic()
        cpu_done = _cpu_s(proc.pid)
        time.sleep(args.settle + 0.2)
        sampler.stop.set()
        report["peak_hwm_mb"] = _status_kb(proc.pid, "VmHWM") / 1024
        report["peak_sampled_mb"] = max(mb for _, mb in sampler.samples)
        report["rss_after_mb"] = {f"{s:g}s": round(sampler.at(done + s), 1) for s in (1, 5, args.settle)}
        report["cpu_s_after_answers"] = round(_cpu_s(proc.pid) - cpu_done, 2)
        idle_band = report["idle_rss_mb"] * 1.1 + 50
        back = [t - done for t, mb in sampler.samples if t >= done and mb <= idle_band]
        report["back_to_idle_s"] = round(back[0], 2) if back else None
        report["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
        report["normal_after"] = post(photo_body)[0]
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
