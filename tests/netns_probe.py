"""Run one fastseg command under ``strace -f -e trace=connect,execve,openat`` and list every
connect() it (or any process it starts) made, and every open of ONNX Runtime's telemetry store,
as JSON on stdout. Meant to run inside a private network namespace
(``unshare -n``, loopback up), where the only reachable address is loopback: see
tests/test_no_phone_home.py and docs/hardening.md.

    python tests/netns_probe.py predict|openvino|serve|ray|serve-ray|lookup MODEL_DIR WORK_DIR [--linger S]

``lookup`` is the harness's own positive control: a Python one-liner that resolves a host name,
which must show as a DNS connect to the fake nameserver whatever ONNX Runtime does.

``serve`` starts the server, sends a few requests to 127.0.0.1, keeps it idle for ``--linger``
seconds after its first answer (ONNX Runtime's telemetry fires about 10 s after a session loads;
counting from the answer, not from the start, keeps a slow, loaded machine from ending the wait
before the session is up), then stops it with SIGINT. ``--until-seen`` ends the idle wait as soon
as a connect beyond loopback shows in the log (the positive control). Every wait is bounded.

The namespace gets its own /etc/resolv.conf naming a nameserver on the fake uplink, so a DNS
lookup shows as a connect beyond loopback whatever the host's resolver is (a host resolver on
127.0.0.53, as systemd-resolved and Docker set up, would otherwise hide every lookup).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

_CONNECT = re.compile(r"^\s*(\d+)\s+connect\(\d+, \{sa_family=(\w+)(.*?)\}, \d+")
_LOOPBACK = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"|inet_pton\(AF_INET6, "::ffff:127\.')
_EXECVE = re.compile(r'^\s*(\d+)\s+execve\("[^"]*", \[(.*?)\]')
_TELEMETRY_OPEN = re.compile(r'^\s*\d+\s+openat\([^"]*"([^"]*onnxruntime\.db)".*?= (.*)$')
LOCAL_FAMILIES = ("AF_UNIX", "AF_LOCAL", "AF_NETLINK", "AF_UNSPEC")


def connects(log: Path) -> list[str]:
    """Every connect() with an address in a strace log, as ``FAMILY address (program args)``
    strings: the program is the last one the connecting pid (or its parent) executed."""
    found, programs = [], {}
    for line in log.read_text(errors="replace").splitlines():
        exec_match = _EXECVE.match(line)
        if exec_match:
            programs[exec_match.group(1)] = exec_match.group(2)[:160]
        match = _CONNECT.match(line)
        if match:
            found.append(f"{match.group(2)}{match.group(3)} ({programs.get(match.group(1), 'pid ' + match.group(1))})")
    return found


def telemetry_opens(log: Path) -> list[str]:
    """Each open of ONNX Runtime's 1DS telemetry store (``onnxruntime.db``) as ``path -> result``:
    ONNX Runtime opens it at import when its telemetry is on, and never when
    ``ORT_DISABLE_TELEMETRY=1`` was set first. Whether it then looks its host up depends on its
    uploader's schedule; the open does not."""
    return sorted({f"{m.group(1)} -> {m.group(2)}" for m in map(_TELEMETRY_OPEN.match, log.read_text(errors="replace").splitlines()) if m})


def non_loopback(found: list[str]) -> list[str]:
    """The connects that could leave the machine: neither loopback nor a local socket family."""
    return [c for c in found if not c.startswith(LOCAL_FAMILIES) and not _LOOPBACK.search(c)]


FAKE_NAMESERVER = "192.0.2.53"


def _network(work: Path) -> bool:
    """Bring loopback up, and add a fake uplink (a veth pair with a default route into it, where
    nothing answers) so that code which looks for a route before it connects still tries: a
    namespace with loopback alone hides such probes. When the probe also has its own mount
    namespace (``unshare -n -m``), point /etc/resolv.conf at a nameserver on that uplink.
    False when veth is not available."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    steps = (
        "link add fs0 type veth peer name fs1", "addr add 192.0.2.1/24 dev fs0", "link set fs0 up",
        "link set fs1 up", "route add default via 192.0.2.254 dev fs0",
    )
    uplink = all(subprocess.run(["ip", *s.split()], check=False, capture_output=True).returncode == 0 for s in steps)
    resolv = work / "resolv.conf"
    resolv.write_text(f"nameserver {FAKE_NAMESERVER}\noptions timeout:1 attempts:1\n")
    private = subprocess.run(["mount", "--make-rprivate", "/"], check=False, capture_output=True).returncode == 0
    if private:
        subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=False, capture_output=True)
    return uplink


def _fastseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "fastseg", *args]


def _traced(log: Path, cmd: list[str]) -> list[str]:
    return ["strace", "-f", "-qq", "-e", "trace=connect,execve,openat", "-o", str(log), "--", *cmd]


def _images(work: Path, count: int) -> Path:
    folder = work / "images"
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(folder / ("sub" if i % 2 else "") / f"img{i}.png"), rng.integers(0, 256, (16, 20, 3), np.uint8))
    return folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _idle(log: Path, proc: subprocess.Popen[bytes], linger: float, until_seen: bool) -> None:
    """Keep the answered server idle for ``linger`` seconds, or until a connect beyond
    loopback shows in the log when ``until_seen``."""
    deadline = time.monotonic() + linger
    while time.monotonic() < deadline and proc.poll() is None:
        if until_seen and log.exists() and non_loopback(connects(log)):
            return
        time.sleep(0.5)


def _serve(log: Path, model: Path, work: Path, linger: float, until_seen: bool, extra: list[str]) -> int:
    port = _free_port()
    body = json.dumps({"image": base64.b64encode((work / "images" / "img0.png").read_bytes()).decode()}).encode()
    start = time.monotonic()
    proc = subprocess.Popen(_traced(log, _fastseg("serve", "--model", str(model), "--port", str(port), *extra)))
    try:
        answered = 0
        while time.monotonic() - start < 120 and proc.poll() is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/semantic-segmentation", data=body,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=10) as reply:
                    answered += reply.status == 200
                if answered == 3:
                    break
            except OSError:
                time.sleep(0.3)
        if answered != 3:
            print(f"serve answered {answered} of 3 requests", file=sys.stderr)
            return 1
        _idle(log, proc, linger, until_seen)
        return 0
    finally:
        # strace's tracee is its child: stop the server, and strace exits with it.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        for child in children:
            os.kill(int(child), signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=("predict", "openvino", "serve", "ray", "serve-ray", "lookup"))
    parser.add_argument("model", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--linger", type=float, default=14.0)
    parser.add_argument("--until-seen", action="store_true")
    args = parser.parse_args()
    uplink = _network(args.work)
    log = args.work / f"{args.case}.strace"
    images = _images(args.work, 4)
    if args.case == "lookup":
        lookup = "import socket\ntry: socket.getaddrinfo('telemetry.example.com', 443)\nexcept OSError: pass"
        rc = subprocess.run(_traced(log, [sys.executable, "-c", lookup]), timeout=60, check=False).returncode
    elif args.case.startswith("serve"):
        rc = _serve(log, args.model, args.work, args.linger, args.until_seen, ["--ray"] if args.case == "serve-ray" else [])
    else:
        source = str(images) if args.case == "ray" else str(images / "img0.png")
        extra = {"ray": ["--ray", "--workers", "1"], "openvino": ["--engine", "openvino"]}.get(args.case, [])
        out = args.work / f"out-{args.case}"
        rc = subprocess.run(
            _traced(log, _fastseg("predict", "--model", str(args.model), "--input", source, "--save_path", str(out), *extra)),
            timeout=240, check=False,
        ).returncode
    found = connects(log)
    resolver = re.findall(r"^nameserver\s+(\S+)", Path("/etc/resolv.conf").read_text(errors="replace"), re.M)
    print(json.dumps({
        "rc": rc, "uplink": uplink, "nameservers": resolver, "connects": len(found), "non_loopback": non_loopback(found),
        "telemetry_store": telemetry_opens(log),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
