"""Directory runs never abort on one file and never overwrite one result with another: the
output tree mirrors the input tree, same-stem files get distinct stable names, names that are
not UTF-8, hold a newline or are near NAME_MAX work, and failures are listed at the end (exit 1).
The same tree on Ray is in scale_out/test_ray.py."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import colour_model_dir

from fastseg.cli import main
from fastseg.output_names import NAME_MAX, output_stems, printable

LATIN1 = os.fsdecode(b"caf\xe9.png")  # not valid UTF-8: a surrogate-escaped str in Python
LONG = "x" * 236 + ".jpg"  # 240 characters
TOO_LONG = "y" * 250 + ".png"  # its <stem>_res.json would be 259 bytes


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (5, 7)) -> None:
    ok, buf = cv2.imencode(".png", np.full((*size, 3), colour, np.uint8))
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(os.fsencode(path), "wb") as fh:  # any name the OS holds, UTF-8 or not
        fh.write(buf.tobytes())


def make_tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """The probe's awkward tree (+ one corrupt file); returns input name -> BGR colour written."""
    colours = {
        "sub1/same.jpg": (0, 0, 255), "sub2/same.jpg": (255, 0, 0), "good.jpg": (0, 0, 255),
        "good.png": (255, 0, 0), LATIN1: (0, 0, 255), LONG: (255, 0, 0), TOO_LONG: (0, 0, 255),
        "new\nline.png": (255, 0, 0),
    }
    for name, colour in colours.items():
        _png(root / name, colour)  # PNG bytes whatever the suffix: the decoder reads the content
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return colours


def expected_outputs() -> list[str]:
    too_long_stem = output_stems([TOO_LONG])[0]
    stems = ["sub1/same", "sub2/same", "good", "good.png", os.fsdecode(b"caf\xe9"), LONG[:-4], too_long_stem, "new\nline"]
    return sorted(f"{s}{end}" for s in stems for end in ("_res.png", "_res.json"))


def test_names_mirror_the_tree_and_tell_same_stems_apart(tmp_path: Path) -> None:
    root = tmp_path / "in"
    files = [str(root / n) for n in ("sub1/same.jpg", "sub2/same.jpg", "good.jpg", "good.png", "Good.bmp", "good.png.jpg")]
    (root / "sub1").mkdir(parents=True)
    stems = output_stems(files, given=[str(root)])
    # byte order: "Good.bmp" < "good.jpg" < "good.png" < "good.png.jpg"; the first keeps the bare stem
    assert stems == ["sub1/same", "sub2/same", "good.jpg", "good.png", "Good", "good.png.jpg"]
    shuffled = files[:]
    random.Random(3).shuffle(shuffled)
    assert dict(zip(shuffled, output_stems(shuffled, given=[str(root)]))) == dict(zip(files, stems)), "order-free"
    # single files or lists: relative to their common parent; a URI: its last segment
    assert output_stems([str(root / "sub1/a.png"), str(root / "b.png")]) == ["sub1/a", "b"]
    assert output_stems(["s3://bucket/x/a.png"]) == ["a"]


def test_names_fit_name_max_with_a_hash(tmp_path: Path) -> None:
    (stem,) = output_stems([str(tmp_path / TOO_LONG)])
    assert len(os.fsencode(stem + "_res.json")) <= NAME_MAX and stem.startswith("y" * 200)
    assert stem != output_stems([str(tmp_path / ("y" * 251 + ".png"))])[0]  # the hash tells cut names apart
    wide = "é" * 126 + ".png"  # 252 bytes in UTF-8: cut on a character boundary
    (stem,) = output_stems([str(tmp_path / wide)])
    assert len(os.fsencode(stem + "_res.json")) <= NAME_MAX and stem.encode("utf-8")


def test_printable_is_one_line_of_valid_utf8() -> None:
    assert printable(os.fsdecode(b"a/caf\xe9\n.png")) == "a/caf\\xe9\\n.png"
    assert printable("plain/é.png") == "plain/é.png"


def test_directory_run_writes_every_result_and_lists_the_failure(tmp_path: Path) -> None:
    model = colour_model_dir(tmp_path / "model")
    root = tmp_path / "in"
    make_tree(root)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["predict", "--input", str(root), "--model", str(model), "--save_path", str(out), "--batch_size", "3"]
    )
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("8 image(s) in ") and "Traceback" not in result.output
    written = sorted(os.path.relpath(p, out) for p in out.rglob("*") if p.is_file())
    assert written == expected_outputs()
    lines = result.stderr.strip().splitlines()
    assert lines[-2] == "1 of 9 image(s) failed (the other results are written):"
    assert lines[-1].startswith(f"  {root / 'broken.png'}: Cannot decode ")
    latin = json.loads((out / (os.fsdecode(b"caf\xe9") + "_res.json")).read_text(encoding="utf-8"))
    assert latin["input_path"] == printable(str(root / LATIN1)) and np.all(np.array(latin["pred"]) == 0)
    assert np.all(np.array(json.loads((out / "good.png_res.json").read_text())["pred"]) == 2)  # blue, not good.jpg's red
    assert np.all(np.array(json.loads((out / "sub2/same_res.json").read_text())["pred"]) == 2)


def test_a_result_that_cannot_be_saved_under_its_name_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fastseg.batch_predict as bp

    model = colour_model_dir(tmp_path / "model")
    root = tmp_path / "in"
    _png(root / "a.png", (0, 0, 255))
    _png(root / "b.png", (0, 0, 255))
    real = bp.output_stems
    monkeypatch.setattr(bp, "output_stems", lambda sources, given: [s.replace("a", "a" * 300) for s in real(sources, given=given)])
    result = CliRunner().invoke(main, ["predict", "--input", str(root), "--model", str(model), "--save_path", str(tmp_path / "o")])
    assert result.exit_code == 1 and "File name too long" in result.stderr, result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["b_res.json", "b_res.png"]
