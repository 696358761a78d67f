"""fastseg.fetch on predict's path (fastseg.inputs.fetch_url): the byte cap, the whole-download
deadline, bounded redirects, malformed URLs refused before any connection (127.0.0.1 only)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

import fastseg.inputs
from fastseg.errors import InputError
from fastseg.fetch import check_url
from fastseg.inputs import InputItem, fetch_url

PNG = cv2.imencode(".png", np.full((8, 12, 3), 200, np.uint8))[1].tobytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/img.png":
            self._send(PNG)
        elif self.path == "/moved":
            self._redirect("/img.png")
        elif self.path == "/loop":
            self._redirect("/loop")
        elif self.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(30):  # 3 s in all, 0.1 s per read: only a whole-download deadline stops it
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, to: str) -> None:
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_predict_url_reads_the_image_and_follows_a_redirect(root: str) -> None:
    assert fetch_url(f"{root}/img.png") == PNG
    image = InputItem(source=f"{root}/moved", url=f"{root}/moved").load()
    assert image.shape == (8, 12, 3) and int(image[0, 0, 0]) == 200


def test_predict_url_over_the_byte_cap_is_refused(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastseg.inputs, "URL_MAX_BYTES", len(PNG) - 1)
    url = f"{root}/img.png"
    with pytest.raises(InputError, match=rf"Cannot download image {url}: the image at '{url}' is larger than {len(PNG) - 1} bytes"):
        InputItem(source=url, url=url).load()
    assert fetch_url(url, max_bytes=len(PNG)) == PNG


def test_predict_url_download_has_one_deadline(root: str) -> None:
    started = time.monotonic()
    with pytest.raises(InputError, match=r"did not finish within 0.5s \(fastseg allows 0.5s\)"):
        fetch_url(f"{root}/drip", timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_predict_url_redirects_and_errors_are_bounded(root: str) -> None:
    with pytest.raises(InputError, match=r"fetching stopped after 5 redirects"):
        fetch_url(f"{root}/loop")
    with pytest.raises(InputError, match=r"Cannot download image .*/missing.png: fetching .* answered HTTP 404\."):
        fetch_url(f"{root}/missing.png")


@pytest.mark.parametrize(("url", "why"), [
    ("http://a b/", "holds a space"),
    ("http://[x]/", "is malformed"),
    ("ftp://host/a.png", r"is not an http\(s\) URL"),
    ("http:///a.png", "has no host"),
])
def test_malformed_urls_are_refused_before_any_connection(url: str, why: str) -> None:
    with pytest.raises(InputError, match=why):
        check_url(url)
