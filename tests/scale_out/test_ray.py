"""fastseg on a local Ray cluster (started once for this module, 2 CPUs, shut down after):
Ray Data batch outputs byte-identical to local ``fastseg predict``, corrupt inputs reported and
skipped, label maps as a Dataset, and the Serve deployment answering PaddleX's client like the
local server. Deselect with ``-m "not ray"``."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from test_directory_runs import expected_outputs, make_tree
from tiny_models import colour_model_dir

ray = pytest.importorskip("ray", reason="needs Ray (the [ray] extra)")

from fastseg.cli import main  # noqa: E402
from fastseg.segmenter import Segmenter  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.init(
        num_cpus=2, object_store_memory=150 * 1024**2, include_dashboard=False,
        logging_level=logging.WARNING, log_to_driver=False,
    )
    try:
        yield
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small random images (mixed sizes, a subdirectory, PNG and JPEG): mixed labels."""
    root = tmp_path_factory.mktemp("imgs")
    (root / "sub").mkdir()
    rng = np.random.default_rng(7)
    for i in range(6):
        image = rng.integers(0, 256, (12 + i, 17 - i, 3), dtype=np.uint8)
        where = root / "sub" if i % 2 else root
        cv2.imwrite(str(where / f"img{i}.{'jpg' if i == 5 else 'png'}"), image)
    return root


def _files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by its relative path (outputs mirror the input tree)."""
    return {os.path.relpath(p, directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_ray_predict_outputs_are_byte_identical_to_local(
    ray_cluster: None, model_dir: Path, image_dir: Path, tmp_path: Path
) -> None:
    common = ["predict", "--input", str(image_dir), "--model", str(model_dir), "--batch_size", "2"]
    local = CliRunner().invoke(main, [*common, "--save_path", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    on_ray = CliRunner().invoke(main, [*common, "--save_path", str(tmp_path / "ray"), "--ray", "--workers", "2"])
    assert on_ray.exit_code == 0, on_ray.output
    assert "6 image(s)" in on_ray.stdout and "2 worker(s) on cpu x 1 thread(s)" in on_ray.stdout
    local_files, ray_files = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert len(local_files) == 12 and sorted(ray_files) == sorted(local_files)
    for name, data in local_files.items():
        assert ray_files[name] == data, name


def test_corrupt_and_missing_inputs_are_reported_and_skipped(
    ray_cluster: None, model_dir: Path, image_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    listing = tmp_path / "inputs.txt"
    good = sorted(str(p) for p in image_dir.rglob("img[0-2].*"))
    listing.write_text("\n".join([good[0], str(bad), good[1], str(tmp_path / "gone.png"), good[2]]) + "\n")
    result = CliRunner().invoke(
        main, ["predict", "--input", str(listing), "--model", str(model_dir), "--ray", "--no-json",
               "--save_path", str(tmp_path / "out")],
    )
    assert result.exit_code == 1, result.output
    assert "3 image(s)" in result.stdout and "2 failed" in result.stdout
    assert f"{bad}: Cannot decode" in result.stderr and f"{tmp_path / 'gone.png'}: no such file" in result.stderr
    # a list's files are placed relative to their common parent directory
    written = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == sorted(f"{Path(g).stem}_res.png" for g in good)


def test_awkward_tree_on_ray_writes_what_local_writes_and_lists_the_failure(
    ray_cluster: None, model_dir: Path, tmp_path: Path
) -> None:
    """Same-stem files, a non-UTF-8 name, a 240-character name, one over NAME_MAX, a newline and a
    corrupt file: no traceback, the failure listed, exit 1, the same files as a local run."""
    root = tmp_path / "in"
    make_tree(root)
    common = ["predict", "--input", str(root), "--model", str(model_dir), "--batch_size", "3"]
    local = CliRunner().invoke(main, [*common, "--save_path", str(tmp_path / "local")])
    on_ray = CliRunner().invoke(main, [*common, "--save_path", str(tmp_path / "ray"), "--ray", "--workers", "1"])
    assert local.exit_code == 1 and on_ray.exit_code == 1, on_ray.output
    assert "8 image(s)" in on_ray.stdout and "1 failed" in on_ray.stdout and "Traceback" not in on_ray.output
    assert on_ray.stderr.strip().splitlines()[-1].startswith(f"  {root / 'broken.png'}: Cannot decode ")
    assert sorted(_files(tmp_path / "ray")) == expected_outputs()
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")


def test_segment_dataset_returns_the_local_label_maps(ray_cluster: None, model_dir: Path, image_dir: Path) -> None:
    from fastseg.ray import segment_dataset

    rows = {row["path"]: row for row in segment_dataset(image_dir, model_dir, batch_size=3).iter_rows()}
    with Segmenter(model_dir) as seg:
        expected = {r.input_path: r.labels_hw for r in seg.predict(image_dir)}
    assert sorted(rows) == sorted(expected)
    for path, labels in expected.items():
        assert rows[path]["ok"] and rows[path]["error"] == ""
        np.testing.assert_array_equal(rows[path]["labels"], labels)


def test_serve_answers_the_paddlex_client_like_the_local_server(
    ray_cluster: None, model_dir: Path, image_dir: Path
) -> None:
    import requests
    from ray import serve
    from serving_fixtures import free_port, live_server

    from fastseg.ray import build_serve_app
    from fastseg.serving import ServingConfig, create_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = ServingConfig(max_batch=4, max_wait_ms=250)  # long wait: concurrent requests share a batch
    serve.run(build_serve_app(model_dir, config=config, replicas=1), name="fastseg", route_prefix="/")
    api_url = f"http://127.0.0.1:{port}/semantic-segmentation"

    # PaddleX's documented Python client (docs/serving.md), unchanged but for a timeout.
    image_bytes = (image_dir / "img0.png").read_bytes()
    image_data = base64.b64encode(image_bytes).decode("ascii")
    payload = {"image": image_data}
    response = requests.post(api_url, json=payload, timeout=60)
    assert response.status_code == 200
    result = response.json()["result"]
    colour = cv2.imdecode(np.frombuffer(base64.b64decode(result["image"]), np.uint8), cv2.IMREAD_COLOR)

    with Segmenter(model_dir) as seg, live_server(create_app(seg)) as local_url:
        expected = requests.post(local_url + "/semantic-segmentation", json=payload, timeout=60).json()["result"]
        bad_local = requests.post(local_url + "/semantic-segmentation", json={"image": "bm90IGFuIGltYWdl"}, timeout=60)
    assert result["labelMap"] == expected["labelMap"] and result["size"] == expected["size"] == [12, 17]
    assert colour.shape == (12, 17, 3)
    bad = requests.post(api_url, json={"image": "bm90IGFuIGltYWdl"}, timeout=60)
    assert (bad.status_code, bad.json()["errorCode"]) == (422, 422) == (bad_local.status_code, 422)
    assert bad.json()["errorMsg"] == bad_local.json()["errorMsg"]
    with ThreadPoolExecutor(4) as pool:  # four clients at once: @serve.batch groups them
        answers = list(pool.map(lambda _: requests.post(api_url, json=payload, timeout=60), range(4)))
    assert all(a.json()["result"]["labelMap"] == expected["labelMap"] for a in answers)
    batching = requests.get(f"http://127.0.0.1:{port}/info", timeout=30).json()["batching"]
    assert batching["images"] == 5 and batching["maxBatchSeen"] >= 2 and batching["maxBatch"] == 4
    page = requests.get(f"http://127.0.0.1:{port}/", timeout=30)
    assert page.status_code == 200 and "Content-Security-Policy" in page.headers
    serve.delete("fastseg")


def test_ray_session_directory_stays_in_the_test_temp_dir(ray_cluster: None) -> None:
    """conftest's RAY_TMPDIR: no session directory is left in /tmp/ray by the suite."""
    import os

    session = ray._private.worker._global_node.get_session_dir_path()
    assert session.startswith(os.environ["RAY_TMPDIR"]), session
