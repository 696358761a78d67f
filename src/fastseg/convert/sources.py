"""Where a Paddle model comes from: a tarball or a directory, legacy or PIR, plus its config.

A source is resolved to a directory holding the program (``inference.json`` for PIR, or
``inference.pdmodel``/``model.pdmodel`` for a legacy ProgramDesc), its ``.pdiparams`` and its
deploy config (PaddleX ``inference.yml`` or PaddleSeg ``deploy.yaml``).
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml

from fastseg.download import file_sha256
from fastseg.errors import ConversionError, ModelDirError
from fastseg.model_dir import PreprocessSpec, ResizeSpec
from fastseg.reference import REFERENCE_MARKER

PaddleFormat = Literal["pir", "legacy"]
_PROGRAMS: tuple[tuple[str, PaddleFormat], ...] = (
    ("inference.json", "pir"),
    ("model.json", "pir"),
    ("inference.pdmodel", "legacy"),
    ("model.pdmodel", "legacy"),
)
_CONFIGS = ("inference.yml", "inference.yaml", "deploy.yaml", "deploy.yml")


@dataclass(frozen=True)
class PaddleSource:
    """A located Paddle inference model."""

    root: Path
    model_file: Path
    params_file: Path
    paddle_format: PaddleFormat
    config_file: Path | None
    sha256: str
    default_name: str
    reference: bool = False
    """The folder carries ``REFERENCE_MARKER``: a fastseg reference build (random weights)."""


@dataclass(frozen=True)
class DeployConfig:
    """What the deploy config says: name (PaddleX only), preprocessing, output op if recorded."""

    model_name: str | None
    preprocess: PreprocessSpec
    output_op: str | None


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a directory (sorted relative paths and contents)."""
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def extract_tarball(tarball: Path, dest: Path) -> Path:
    """Extract ``tarball`` into ``dest`` refusing absolute paths, ``..`` and links.

    Raises:
        ModelDirError: the file is not a readable tar archive or has an unsafe member.
    """
    try:
        with tarfile.open(tarball) as tar:
            members = tar.getmembers()
            for m in members:
                parts = PurePosixPath(m.name).parts
                if m.name.startswith(("/", "\\")) or ".." in parts or not (m.isfile() or m.isdir()):
                    raise ModelDirError(
                        f"Refusing to extract {tarball}: unsafe member {m.name!r} (absolute path, '..' or link)."
                    )
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ModelDirError(
            f"{tarball} is not a readable tar archive ({exc}); download it again or pass a model directory."
        ) from exc
    return dest


def _find_model_root(base: Path) -> Path:
    candidates = [base, *sorted(p for p in base.rglob("*") if p.is_dir())]
    for d in candidates:
        if any((d / name).is_file() for name, _ in _PROGRAMS):
            return d
    found = sorted(p.name for p in base.rglob("*") if p.is_file())[:8]
    raise ConversionError(
        f"No Paddle inference program in {base} (looked for {', '.join(n for n, _ in _PROGRAMS)}; "
        f"found {found or 'no files'}). Pass a PaddleX/PaddleSeg exported inference model."
    )


def open_source(source: Path, workdir: Path) -> PaddleSource:
    """Resolve a tarball or directory to a ``PaddleSource`` (tarballs extract into ``workdir``).

    Raises:
        ModelDirError: missing path or corrupt/unsafe tarball.
        ConversionError: no program, unsupported format, or missing params file.
    """
    source = Path(source).absolute()  # the Paddle child runs in its own workdir: a relative path would miss
    if not source.exists():
        raise ModelDirError(f"{source} does not exist; pass a Paddle inference directory or its .tar.")
    if source.is_file():
        if not tarfile.is_tarfile(source):
            raise ModelDirError(
                f"{source} is not a tar archive (corrupt or unsupported); pass the official *_infer.tar "
                "or an extracted model directory."
            )
        root = _find_model_root(extract_tarball(source, workdir / "source"))
        default_name = source.name.split(".tar")[0].removesuffix("_infer")
    else:
        root = _find_model_root(source)
        default_name = root.name.removesuffix("_infer")
    model_file, fmt = next((root / n, f) for n, f in _PROGRAMS if (root / n).is_file())
    if fmt == "pir" and not _looks_like_pir(model_file):
        raise ConversionError(f"{model_file} is not a PIR program (no 'pir' magic); unsupported model format.")
    params = model_file.with_suffix(".pdiparams")
    if not params.is_file():
        raise ConversionError(
            f"Params file {params.name} is missing next to {model_file.name} in {root}; "
            "copy the exported .pdiparams there."
        )
    config = next((root / n for n in _CONFIGS if (root / n).is_file()), None)
    return PaddleSource(
        root=root,
        model_file=model_file,
        params_file=params,
        paddle_format=fmt,
        config_file=config,
        sha256=sha256_of(source),
        default_name=default_name,
        reference=(root / REFERENCE_MARKER).is_file(),
    )


def _looks_like_pir(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(256)
    return b'"pir"' in head or b'"magic"' in head


def read_deploy_config(config_file: Path | None) -> DeployConfig:
    """Parse PaddleX ``inference.yml`` / PaddleSeg ``deploy.yaml`` into preprocessing.

    A missing config means PaddleSeg defaults (Normalize mean=std=0.5).

    Raises:
        ConversionError: unreadable YAML or an unsupported transform type (named).
    """
    if config_file is None:
        return DeployConfig(model_name=None, preprocess=PreprocessSpec(), output_op=None)
    try:
        raw = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConversionError(f"{config_file} is not valid YAML ({exc}).") from exc
    deploy: dict[str, Any] = raw.get("Deploy") or {}
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: ResizeSpec | None = None
    for t in deploy.get("transforms") or []:
        kind = t.get("type")
        if kind == "Normalize":
            mean = _triple(t.get("mean", mean), config_file)
            std = _triple(t.get("std", std), config_file)
        elif kind == "Resize":
            resize = _resize_spec(t, paddlex=config_file.name != "deploy.yaml")
        else:
            raise ConversionError(
                f"Unsupported transform type {kind!r} in {config_file.name} (supported: Normalize, Resize); "
                "edit Deploy.transforms or preprocess the images yourself."
            )
    name = (raw.get("Global") or {}).get("model_name")
    output_op = deploy.get("output_op")
    return DeployConfig(
        model_name=str(name) if name else None,
        preprocess=PreprocessSpec(mean=mean, std=std, resize=resize),
        output_op=str(output_op) if output_op else None,
    )


# Resize arguments a config may leave out. PaddleX's predictor (inference.yml) builds its Resize
# with keep_ratio=True, size_divisor=32 and target_size=-1 (= no resize), see paddlex
# inference/models/semantic_segmentation/predictor.py ``build_resize``; PaddleSeg's own deploy
# (deploy.yaml) uses paddleseg.transforms.Resize's defaults. The same YAML thus means different
# sizes to the two runtimes: we follow the runtime that reads that file.
_PADDLEX_RESIZE_DEFAULTS: dict[str, Any] = {"target_size": -1, "keep_ratio": True, "size_divisor": 32}
_PADDLESEG_RESIZE_DEFAULTS: dict[str, Any] = {"target_size": [512, 512], "keep_ratio": False, "size_divisor": None}


def _resize_spec(transform: dict[str, Any], *, paddlex: bool) -> ResizeSpec | None:
    """The ResizeSpec of one ``Resize`` transform; None where it resizes nothing (-1)."""
    args = {**(_PADDLEX_RESIZE_DEFAULTS if paddlex else _PADDLESEG_RESIZE_DEFAULTS), **transform}
    size = args["target_size"]
    size = [size, size] if isinstance(size, int) else list(size)
    if size == [-1, -1]:
        return None
    divisor = args["size_divisor"]
    return ResizeSpec(
        target_size=(int(size[0]), int(size[1])),
        keep_ratio=bool(args["keep_ratio"]),
        size_divisor=None if divisor is None else int(divisor),
        interp=str(args.get("interp", "LINEAR")),
    )


def _triple(values: Any, config_file: Path) -> tuple[float, float, float]:
    vals = [float(v) for v in values] if isinstance(values, (list, tuple)) else []
    if len(vals) != 3:
        raise ConversionError(f"{config_file.name}: Normalize needs 3 per-channel values, got {values!r}.")
    return (vals[0], vals[1], vals[2])


def palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """PaddleSeg's ``get_color_map_list`` colours for labels 0..num_classes-1 (as the zoo lists them)."""
    from fastseg.results import paddlex_palette

    return tuple((int(r), int(g), int(b)) for r, g, b in paddlex_palette(num_classes))
