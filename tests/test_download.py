"""fastseg.download against a real HTTP server on 127.0.0.1 serving a tarball built here."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fastseg.download import (
    ChecksumError,
    HTTPStatusError,
    UnreachableError,
    fetch,
    fetch_model_tarball,
    file_sha256,
    part_path,
    recorded_sha256,
)
from fastseg.errors import DownloadError
from fastseg.zoo import ModelSpec, load_zoo

NAME = "PP-LiteSeg-T"
TAR = f"{NAME}_infer.tar"


@dataclass
class Behaviour:
    """What the test server does; tests change it between requests."""

    files: dict[str, bytes]
    ignore_range: bool = False
    drop_after: int | None = None  # send this many body bytes of the next answer, then hang up
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


def _handler(behaviour: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            behaviour.seen.append((self.path, range_header))
            body = behaviour.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            start = 0
            if range_header and not behaviour.ignore_range:
                if_range = self.headers.get("If-Range")
                if if_range is None or if_range == etag:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("ETag", etag)
            self.end_headers()
            payload = body[start:]
            if behaviour.drop_after is not None:
                payload, behaviour.drop_after = payload[: behaviour.drop_after], None
                self.close_connection = True
            self.wfile.write(payload)

    return Handler


@dataclass(frozen=True)
class Server:
    url: str
    behaviour: Behaviour


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours *_proxy variables; the loopback server must be reached directly."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def tarball() -> bytes:
    """A small PaddleX-like inference tarball (a directory of files, ~300 KB)."""
    rng = random.Random(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [
            (f"{NAME}_infer/inference.json", b'{"program": "fake"}'),
            (f"{NAME}_infer/inference.yml", b"Global:\n  model_name: PP-LiteSeg-T\n"),
            (f"{NAME}_infer/inference.pdiparams", rng.randbytes(300_000)),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture()
def server(tarball: bytes) -> Iterator[Server]:
    behaviour = Behaviour(files={f"/a/{TAR}": tarball, f"/b/{TAR}": tarball})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(behaviour))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", behaviour)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir()) if dest.parent.exists() else []


def _spec(*urls: str, sha256: str | None = None) -> ModelSpec:
    return dataclasses.replace(
        load_zoo().get(NAME), inference_urls=tuple(urls), inference_sha256=sha256
    )


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{TAR}"  # nothing listens there any more


# --- fetch -------------------------------------------------------------------------------


def test_full_download_records_size_and_sha256(
    server: Server, tarball: bytes, tmp_path: Path
) -> None:
    dest = tmp_path / "dl" / TAR
    result = fetch(f"{server.url}/a/{TAR}", dest, progress=False, chunk_size=4096)
    assert result.path == dest
    assert result.bytes == len(tarball) == dest.stat().st_size
    assert result.sha256 == _sha(tarball) == file_sha256(dest)
    assert result.resumed is False
    assert dest.read_bytes() == tarball
    assert _leftovers(dest) == [TAR]  # no .part, no .part.json
    assert server.behaviour.seen == [(f"/a/{TAR}", None)]
    with tarfile.open(dest) as tar:
        assert f"{NAME}_infer/inference.yml" in tar.getnames()


def test_interrupted_download_resumes_with_range(
    server: Server, tarball: bytes, tmp_path: Path
) -> None:
    dest = tmp_path / TAR
    url = f"{server.url}/a/{TAR}"
    server.behaviour.drop_after = 100_000
    with pytest.raises(DownloadError, match=r"interrupted at 100000 of \d+ bytes.*resume"):
        fetch(url, dest, progress=False, chunk_size=4096)
    assert not dest.exists()
    assert part_path(dest).stat().st_size == 100_000

    result = fetch(url, dest, progress=False, chunk_size=4096)
    assert result.resumed is True
    assert server.behaviour.seen[-1] == (f"/a/{TAR}", "bytes=100000-")
    assert result.bytes == len(tarball)
    assert result.sha256 == _sha(tarball)
    assert dest.read_bytes() == tarball
    assert _leftovers(dest) == [TAR]


def test_server_ignoring_range_restarts_from_zero(
    server: Server, tarball: bytes, tmp_path: Path
) -> None:
    dest = tmp_path / TAR
    url = f"{server.url}/a/{TAR}"
    server.behaviour.drop_after = 50_000
    with pytest.raises(DownloadError, match="interrupted"):
        fetch(url, dest, progress=False)
    server.behaviour.ignore_range = True

    result = fetch(url, dest, progress=False)
    assert server.behaviour.seen[-1] == (f"/a/{TAR}", "bytes=50000-")  # asked, got a 200
    assert result.resumed is False
    assert result.bytes == len(tarball)
    assert dest.read_bytes() == tarball


def test_part_already_complete_is_finished_after_416(
    server: Server, tarball: bytes, tmp_path: Path
) -> None:
    dest = tmp_path / TAR
    url = f"{server.url}/a/{TAR}"
    server.behaviour.drop_after = len(tarball) - 1
    with pytest.raises(DownloadError, match="interrupted"):
        fetch(url, dest, progress=False)
    with part_path(dest).open("ab") as f:  # as if the last byte had arrived before the cut
        f.write(tarball[-1:])

    result = fetch(url, dest, progress=False)
    assert server.behaviour.seen[-1] == (f"/a/{TAR}", f"bytes={len(tarball)}-")
    assert result.resumed is True
    assert result.sha256 == _sha(tarball)
    assert _leftovers(dest) == [TAR]


def test_part_longer_than_file_restarts_after_416(
    server: Server, tarball: bytes, tmp_path: Path
) -> None:
    dest = tmp_path / TAR
    url = f"{server.url}/a/{TAR}"
    server.behaviour.drop_after = 10
    with pytest.raises(DownloadError, match="interrupted"):
        fetch(url, dest, progress=False)
    part_path(dest).write_bytes(b"x" * (len(tarball) + 5))  # a stale, longer .part

    result = fetch(url, dest, progress=False)
    assert [r for _, r in server.behaviour.seen[-2:]] == [f"bytes={len(tarball) + 5}-", None]
    assert result.resumed is False
    assert dest.read_bytes() == tarball


def test_part_of_another_url_is_not_resumed(server: Server, tarball: bytes, tmp_path: Path) -> None:
    dest = tmp_path / TAR
    server.behaviour.drop_after = 1000
    with pytest.raises(DownloadError, match="interrupted"):
        fetch(f"{server.url}/a/{TAR}", dest, progress=False)

    result = fetch(f"{server.url}/b/{TAR}", dest, progress=False)
    assert server.behaviour.seen[-1] == (f"/b/{TAR}", None)
    assert result.resumed is False
    assert dest.read_bytes() == tarball


def test_changed_file_is_fetched_whole_via_if_range(
    server: Server, tarball: bytes, tmp_path: Path
) -> None:
    dest = tmp_path / TAR
    url = f"{server.url}/a/{TAR}"
    server.behaviour.drop_after = 1000
    with pytest.raises(DownloadError, match="interrupted"):
        fetch(url, dest, progress=False)
    changed = tarball[::-1]  # the server now has another version (another ETag)
    server.behaviour.files[f"/a/{TAR}"] = changed

    result = fetch(url, dest, progress=False)
    assert result.resumed is False
    assert dest.read_bytes() == changed


def test_checksum_mismatch_leaves_nothing(server: Server, tarball: bytes, tmp_path: Path) -> None:
    dest = tmp_path / TAR
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        fetch(f"{server.url}/a/{TAR}", dest, sha256=wrong, progress=False)
    message = str(info.value)
    assert f"expected sha256 {wrong}" in message
    assert f"got {_sha(tarball)}" in message
    assert _leftovers(dest) == []


def test_matching_checksum_any_case_is_accepted(
    server: Server, tarball: bytes, tmp_path: Path
) -> None:
    result = fetch(
        f"{server.url}/a/{TAR}", tmp_path / TAR, sha256=_sha(tarball).upper(), progress=False
    )
    assert result.sha256 == _sha(tarball)


def test_http_404_is_a_status_error(server: Server, tmp_path: Path) -> None:
    with pytest.raises(HTTPStatusError, match="HTTP 404") as info:
        fetch(f"{server.url}/missing.tar", tmp_path / TAR, progress=False)
    assert info.value.status == 404
    assert _leftovers(tmp_path / TAR) == []


def test_closed_port_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(UnreachableError, match="Cannot reach"):
        fetch(_closed_port_url(), tmp_path / TAR, progress=False)


def test_silent_server_times_out_as_unreachable(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/{TAR}"
        with pytest.raises(UnreachableError, match="timed out"):
            fetch(url, tmp_path / TAR, progress=False, timeout=0.2)


def test_file_url_is_copied(tarball: bytes, tmp_path: Path) -> None:
    source = tmp_path / "src dir" / TAR
    source.parent.mkdir()
    source.write_bytes(tarball)
    dest = tmp_path / "out" / TAR
    result = fetch(source.as_uri(), dest, sha256=_sha(tarball), progress=False)
    assert (result.bytes, result.sha256, result.resumed) == (len(tarball), _sha(tarball), False)
    assert dest.read_bytes() == tarball
    assert _leftovers(dest) == [TAR]


def test_missing_file_url_and_bad_scheme(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="is not a file"):
        fetch((tmp_path / "nope.tar").as_uri(), tmp_path / TAR, progress=False)
    with pytest.raises(DownloadError, match="unsupported URL scheme 'ftp'"):
        fetch("ftp://127.0.0.1/x.tar", tmp_path / TAR, progress=False)


# --- fetch_model_tarball ------------------------------------------------------------------


def test_model_tarball_falls_back_after_404_and_records_sha256(
    server: Server, tarball: bytes, tmp_path: Path
) -> None:
    spec = _spec(f"{server.url}/gone/{TAR}", f"{server.url}/b/{TAR}")
    path = fetch_model_tarball(spec, home=tmp_path, progress=False)
    assert path == tmp_path / "downloads" / TAR
    assert path.read_bytes() == tarball
    assert [p for p, _ in server.behaviour.seen] == [f"/gone/{TAR}", f"/b/{TAR}"]
    assert recorded_sha256(path) == _sha(tarball)
    assert (tmp_path / "downloads" / f"{TAR}.sha256").read_text() == f"{_sha(tarball)}  {TAR}\n"
    assert sorted(p.name for p in path.parent.iterdir()) == [TAR, f"{TAR}.sha256"]

    again = fetch_model_tarball(spec, home=tmp_path, progress=False)  # cache hit
    assert again == path
    assert len(server.behaviour.seen) == 2


def test_model_tarball_pinned_sha256_refetches_a_stale_file(
    server: Server, tarball: bytes, tmp_path: Path
) -> None:
    stale = tmp_path / "downloads" / TAR
    stale.parent.mkdir()
    stale.write_bytes(b"old contents")
    spec = _spec(f"{server.url}/a/{TAR}", sha256=_sha(tarball))
    path = fetch_model_tarball(spec, home=tmp_path, progress=False)
    assert path.read_bytes() == tarball
    assert len(server.behaviour.seen) == 1
    fetch_model_tarball(spec, home=tmp_path, progress=False)  # now a verified cache hit
    assert len(server.behaviour.seen) == 1


def test_model_tarball_pinned_mismatch_on_every_url(server: Server, tmp_path: Path) -> None:
    spec = _spec(f"{server.url}/a/{TAR}", f"{server.url}/b/{TAR}", sha256="1" * 64)
    with pytest.raises(DownloadError, match="checksum mismatch.*checksum mismatch.*--from"):
        fetch_model_tarball(spec, home=tmp_path, progress=False)
    assert list((tmp_path / "downloads").iterdir()) == []


def test_model_tarball_all_404_lists_urls(server: Server, tmp_path: Path) -> None:
    urls = (f"{server.url}/x/{TAR}", f"{server.url}/y/{TAR}")
    with pytest.raises(DownloadError) as info:
        fetch_model_tarball(_spec(*urls), home=tmp_path, progress=False)
    message = str(info.value)
    assert message == (
        f"Cannot download {NAME} ({urls[0]}: HTTP 404; {urls[1]}: HTTP 404): copy {TAR} from a machine online into "
        f"{tmp_path / 'downloads'}/ (or 'fastseg convert {NAME} --from {TAR}'), "
        "or use untrained reference weights (weights='reference')."
    )
    assert not isinstance(info.value, HTTPStatusError)


def test_model_tarball_offline_is_one_line_naming_from(tmp_path: Path) -> None:
    urls = (_closed_port_url(), f"http://fastseg-offline.invalid/{TAR}")
    with pytest.raises(DownloadError) as info:
        fetch_model_tarball(_spec(*urls), home=tmp_path, progress=False, timeout=5.0)
    assert str(info.value) == (
        f"Cannot download {NAME} (offline?): copy {TAR} from a machine online into {tmp_path / 'downloads'}/ (or "
        f"'fastseg convert {NAME} --from {TAR}'), or use untrained reference weights (weights='reference')."
    )
    assert "\n" not in str(info.value)


def test_model_tarball_interruption_is_raised_then_resumed(
    server: Server, tarball: bytes, tmp_path: Path
) -> None:
    spec = _spec(f"{server.url}/a/{TAR}", f"{server.url}/b/{TAR}")
    server.behaviour.drop_after = 4096
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        fetch_model_tarball(spec, home=tmp_path, progress=False)
    assert [p for p, _ in server.behaviour.seen] == [f"/a/{TAR}"]  # no fallback mid-transfer
    state = json.loads((tmp_path / "downloads" / f"{TAR}.part.json").read_text())
    assert state["url"] == f"{server.url}/a/{TAR}"

    path = fetch_model_tarball(spec, home=tmp_path, progress=False)
    assert server.behaviour.seen[-1] == (f"/a/{TAR}", "bytes=4096-")
    assert path.read_bytes() == tarball
    assert recorded_sha256(path) == _sha(tarball)


def test_zoo_urls_prefer_paddle3_0_0() -> None:
    for spec in load_zoo().models.values():
        # MaskFormer: official_models.py's paddle3.0.0 only (no paddle3.0b2 tarball is known)
        expected = ["paddle3.0.0"] if spec.family == "MaskFormer" else ["paddle3.0.0", "paddle3.0b2"]
        assert [u.split("/")[-2] for u in spec.inference_urls] == expected
        assert all(u.endswith(f"/{spec.name}_infer.tar") for u in spec.inference_urls)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_only_when_asked_and_on_a_terminal(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, progress: bool
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    fetch(f"{server.url}/a/{TAR}", tmp_path / TAR, progress=progress, chunk_size=65536)
    shown = terminal.getvalue()
    if progress:
        assert TAR in shown and "100%" in shown
    else:
        assert shown == ""
