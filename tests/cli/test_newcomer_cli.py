"""What a newcomer meets first: the packaged demo image, one wording for devices and flags,
one-line offline errors, a directory run that survives a corrupt image, a busy port."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import colour_model_dir

from fastseg.cli import main
from fastseg.demo_data import demo_image
from fastseg.errors import DeviceError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $FASTSEG_HOME, so nothing from the user's cache leaks in."""
    root = tmp_path / "home"
    monkeypatch.setenv("FASTSEG_HOME", str(root))
    return root


# ------------------------------------------------------------------ the demo image
def test_demo_image_ships_in_the_package_with_its_licence() -> None:
    path = demo_image()
    assert path.is_file() and path.stat().st_size < 150_000
    assert cv2.imread(str(path)).shape == (512, 1024, 3)
    notice = (path.parent / "NOTICE.md").read_text(encoding="utf-8")
    assert "Apache License 2.0" in notice and "PaddlePaddle/PaddleX" in notice and path.name in notice


def test_predict_without_input_segments_the_demo_image(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", "--model", str(model_dir), "--save_path", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("1 image(s) in ")
    assert sorted(p.name for p in out.iterdir()) == ["demo_street_res.json", "demo_street_res.png"]
    assert cv2.imread(str(out / "demo_street_res.png")).shape == (512, 1024, 3)
    res = json.loads((out / "demo_street_res.json").read_text())
    assert res["input_path"] == str(demo_image()) and "weights" not in res  # an ordinary model: PaddleX's keys
    assert np.array(res["pred"]).shape == (1, 512, 1024)


def test_predict_help_says_what_runs_without_input() -> None:
    text = CliRunner().invoke(main, ["predict", "--help"]).output
    assert "demo street photo" in text and "demo_street.jpg" in text
    assert "--weights [official|reference]" in text and "UNTRAINED" in text


# ------------------------------------------------------------------ a directory with a corrupt image
def test_directory_run_keeps_going_past_a_corrupt_image(model_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    red = np.zeros((6, 8, 3), np.uint8)
    red[..., 2] = 255
    cv2.imwrite(str(images / "a_red.png"), red)
    (images / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    cv2.imwrite(str(images / "c_blue.png"), np.full((5, 7, 3), (255, 0, 0), np.uint8))
    cv2.imwrite(str(images / "d_red.png"), red)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["predict", "--input", str(images), "--model", str(model_dir), "--save_path", str(out), "--batch_size", "2"]
    )
    assert result.exit_code == 1
    assert result.stdout.startswith("3 image(s) in ")
    assert sorted(p.name for p in out.iterdir()) == [
        "a_red_res.json", "a_red_res.png", "c_blue_res.json", "c_blue_res.png", "d_red_res.json", "d_red_res.png",
    ]
    assert np.all(np.array(json.loads((out / "c_blue_res.json").read_text())["pred"]) == 2)
    lines = result.stderr.strip().splitlines()
    assert lines[-2] == "1 of 4 image(s) failed (the other results are written):"
    assert "b_broken.png" in lines[-1] and "Traceback" not in result.output


# ------------------------------------------------------------------ one vocabulary for devices and flags
def test_gpu_error_names_the_cli_flag_on_the_cli_and_the_keyword_in_python(model_dir: Path) -> None:
    import onnxruntime as ort

    from fastseg.segmenter import Segmenter

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA")
    result = CliRunner().invoke(main, ["predict", "--model", str(model_dir), "--device", "gpu:0"])
    assert result.exit_code == 2 and "--allow_fallback" in result.output
    assert "allow_fallback=True" not in result.output and result.output.count("\n") == 1
    with pytest.raises(DeviceError, match="allow_fallback=True"):
        Segmenter(model_dir, device="gpu:0")


@pytest.mark.parametrize("command", ["predict", "serve", "bench"])
def test_commands_share_device_words_and_the_fallback_flag(command: str) -> None:
    text = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
    assert "gpu:N" in text and "cuda" not in text.lower()
    assert "--allow_fallback" in text


def test_serve_falls_back_to_cpu_with_the_flag(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve --allow_fallback`` reaches the Segmenter (uvicorn itself is not started)."""
    import fastseg.segmenter as segmenter_mod
    from fastseg.serving import server

    seen: dict[str, object] = {}
    real = segmenter_mod.Segmenter

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            seen.update(kwargs)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(segmenter_mod, "Segmenter", Recording)
    monkeypatch.setattr(server, "run_server", lambda app, config, **kw: seen.update(ran=True))
    result = CliRunner().invoke(main, ["serve", "--model", str(model_dir), "--device", "gpu:0", "--allow_fallback", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert seen["allow_fallback"] is True and seen["ran"] is True


def test_serve_on_a_busy_port_fails_before_the_banner(model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--model", str(model_dir), "--port", str(port)])
    assert result.exit_code == 2
    assert result.output == f"Error: Port {port} on 127.0.0.1 is already in use: stop what listens there or choose another --port.\n"


# ------------------------------------------------------------------ convert's own words
def test_convert_unknown_name_suggests_what_convert_takes() -> None:
    result = CliRunner().invoke(main, ["convert", "PP-LiteSeg"])
    assert result.exit_code == 2 and "Did you mean 'PP-LiteSeg-T'" in result.output
    assert "converted model directory" not in result.output and "--model-dir DIR" in result.output


# ------------------------------------------------------------------ offline: one short line, said once
@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import fastseg.download as download

    def unreachable(url: str, dest: Path, **_: object) -> object:
        raise download.UnreachableError(f"Cannot reach {url}: [Errno -3] Temporary failure in name resolution.")

    monkeypatch.setattr(download, "fetch", unreachable)
    monkeypatch.setattr("fastseg.convert.child.require_convert_deps", lambda: None)


@pytest.mark.parametrize(
    "args",
    [["predict", "--model", "PP-LiteSeg-T"], ["convert", "PP-LiteSeg-T"], ["tune", "PP-LiteSeg-T"],
     ["bench", "--weights", "official", "--peak-gflops", "1"]],
    ids=["predict", "convert", "tune", "bench"],
)
def test_offline_zoo_name_is_one_line_naming_both_ways_once(args: list[str], home: Path, offline: None) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    line = result.output
    assert line.count("\n") == 1 and len(line) - len(str(home)) < 250, line  # one short line, whatever the home
    assert line.startswith(f"Error: Cannot download PP-LiteSeg-T (offline?): copy PP-LiteSeg-T_infer.tar from a machine "
                           f"online into {home / 'downloads'}/ (or 'fastseg convert PP-LiteSeg-T --from")
    assert line.count("--from") == 1 and line.count("--weights reference") == 1
    assert "untrained reference weights" in line and not (home / "models").exists()


def test_weights_reference_refuses_a_directory_also_in_a_pipeline(model_dir: Path) -> None:
    result = CliRunner().invoke(main, ["predict", "--model", str(model_dir), "--weights", "reference"])
    assert result.exit_code == 2 and "--weights reference builds a zoo model" in result.output
    pipe = model_dir.parent / "pipe.yaml"
    pipe.write_text(f"pipeline_name: semantic_segmentation\nSubModules:\n  SemanticSegmentation:\n    model_dir: {model_dir}\n")
    result = CliRunner().invoke(main, ["predict", "--pipeline", str(pipe), "--weights", "reference"])
    assert result.exit_code == 2 and "is a model directory: its weights are the ones it holds" in result.output
    result = CliRunner().invoke(main, ["convert", "PP-LiteSeg-T", "--from", str(model_dir), "--weights", "reference"])
    assert result.exit_code == 2 and "without --from/--model-dir" in result.output


def test_a_second_input_is_refused_not_silently_replacing_the_first() -> None:
    result = CliRunner().invoke(main, ["predict", "--input", "http://[x]/", "--input", "demo.jpg"])
    assert result.exit_code == 2
    assert "Invalid value for '--input': given 2 times; pass one image, directory, URL or video" in result.output
