"""Batch segmentation on Ray Data: the files stay where they are (``read_binary_files``), a pool
of actors each holding ONE ``Segmenter`` decodes and segments them (``map_batches``), and each
actor writes the same ``<stem>_res.png``/``<stem>_res.json`` files as ``fastseg predict``
(through ``SegResult.save_to_img``/``save_to_json``). A file that cannot be decoded or
segmented becomes a failure row; it never stops the job.

    report = segment("photos/", "PP-LiteSeg-T", save_path="out/", workers=2)
    ds = segment_dataset("photos/", "PP-LiteSeg-T")  # rows: path, ok, error, labels (HxW int32)
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fastseg.errors import FastSegError, InputError
from fastseg.processing import TargetSize, decode_image
from fastseg.ray.cluster import (
    ModelFiles,
    WorkerSegmenter,
    cluster_resources,
    fetch_model,
    ray_session,
    worker_error,
)
from fastseg.ray.devices import WorkerPlan, plan_workers
from fastseg.results import SegResult
from fastseg.inputs import InputItem, expand_inputs

if TYPE_CHECKING:
    import ray.data

LIST_SUFFIXES = (".txt", ".lst")
_GLOB_CHARS = frozenset("*?[")
_NO_LABELS = np.zeros((0, 0), dtype=np.int32)


@dataclass(frozen=True)
class BatchReport:
    """What a ``segment`` run did: counts, time, placement, and each failed input with its reason."""

    total: int
    succeeded: int
    failed: tuple[tuple[str, str], ...]
    seconds: float
    plan: WorkerPlan
    model_name: str

    @property
    def ok(self) -> bool:
        return not self.failed


# ----------------------------------------------------------------------------- inputs
def list_inputs(inputs: str | Path | Sequence[str | Path]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files to read, and inputs that are missing (reported as failures, never sent to Ray).

    Accepts a directory (recursive, image suffixes, sorted, as ``fastseg predict``), a file, a
    glob (``'shots/**/*.jpg'``), a ``.txt``/``.lst`` file naming one path per line, a remote
    URI Ray can list (``s3://bucket/prefix/``), or a list of these.

    Raises:
        InputError: an http(s) URL, a missing path or empty directory given directly, or a
            glob/list that matches no existing file.
    """
    files: list[str] = []
    missing: list[tuple[str, str]] = []
    for entry in [inputs] if isinstance(inputs, (str, Path)) else list(inputs):
        text = str(entry)
        if text.lower().startswith(("http://", "https://")):
            raise InputError(f"{text}: Ray reads files and object stores, not http(s) URLs; download them first.")
        if "://" in text:
            files.append(text)  # s3://, gs://, ...: Ray's file system lists and reads it
        elif _GLOB_CHARS & set(text) and not Path(text).exists():
            matched = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matched:
                raise InputError(f"The pattern {text!r} matches no files.")
            files.extend(matched)
        elif Path(text).is_file() and Path(text).suffix.lower() in LIST_SUFFIXES:
            lines = Path(text).read_text(encoding="utf-8").splitlines()
            names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            if not names:
                raise InputError(f"The list {text!r} names no files.")
            for name in names:
                if "://" in name or Path(name).is_file():
                    files.append(name)
                else:
                    missing.append((name, "no such file"))
        else:  # a file or a directory, as `fastseg predict`; a missing one is an error here too
            files.extend(item.source for item in expand_inputs(text) if item.source is not None)
    if not files:
        raise InputError(f"None of the {len(missing)} listed input(s) exists, e.g. {missing[0][0]!r}.")
    return files, missing


# ----------------------------------------------------------------------------- the actor
class SegmentBatch:
    """A Ray Data callable class: one ``Segmenter`` per actor, built once, used for every batch.

    Input batch: ``{"path": str[], "bytes": bytes[]}`` (from ``read_binary_files``). Output:
    ``{"path", "ok", "error"}`` plus ``"labels"`` (HxW int32; empty on failure) when
    ``save_path`` is None.
    """

    def __init__(
        self,
        model: ModelFiles | Any,
        *,
        plan: WorkerPlan,
        segmenter_kwargs: Mapping[str, Any],
        save_path: str | None,
        overlay: bool,
        save_json: bool,
        target_size: TargetSize | None,
    ) -> None:
        self._worker = WorkerSegmenter(
            fetch_model(model), device=plan.device, threads=plan.intra_op_threads, segmenter_kwargs=segmenter_kwargs
        )
        self._save_path = None if save_path is None else Path(save_path)
        self._overlay = overlay
        self._save_json = save_json
        self._target_size = target_size

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        paths = [str(p) for p in batch["path"]]
        errors: dict[int, str] = {}
        items: dict[int, InputItem] = {}
        for i, (path, blob) in enumerate(zip(paths, batch["bytes"])):
            try:
                items[i] = InputItem(source=path, image=decode_image(bytes(blob), source=repr(path)))
            except FastSegError as exc:
                errors[i] = str(exc)
        labels: dict[int, npt.NDArray[np.int32]] = {}
        for i, result in self._predict(items, errors):
            try:
                self._save(result)
            except (FastSegError, OSError) as exc:
                errors[i] = f"saving failed: {exc}"
                continue
            labels[i] = result.labels_hw
        out: dict[str, Any] = {
            "path": np.array(paths, dtype=object),
            "ok": np.array([i not in errors for i in range(len(paths))], dtype=bool),
            "error": np.array([errors.get(i, "") for i in range(len(paths))], dtype=object),
        }
        if self._save_path is None:
            out["labels"] = [labels.get(i, _NO_LABELS) for i in range(len(paths))]
        return out

    def _predict(self, items: Mapping[int, InputItem], errors: dict[int, str]) -> Iterator[tuple[int, SegResult]]:
        """Segment the decoded images as one batch; if that fails, one by one to find the culprit."""
        seg = self._worker.segmenter
        keys = list(items)
        if not keys:
            return
        try:
            results = list(seg.predict([items[k] for k in keys], batch_size=len(keys), target_size=self._target_size))
        except Exception:  # noqa: BLE001 - isolate the failing image below instead of losing the batch
            results = []
        if len(results) == len(keys):
            yield from zip(keys, results)
            return
        for k in keys:
            try:
                (result,) = seg.predict([items[k]], batch_size=1, target_size=self._target_size)
            except Exception as exc:  # noqa: BLE001 - one bad image must not abort the job
                errors[k] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, FastSegError) else str(exc)
                continue
            yield k, result

    def _save(self, result: SegResult) -> None:
        if self._save_path is None:
            return
        result.save_to_img(self._save_path, overlay=self._overlay)
        if self._save_json:
            result.save_to_json(self._save_path)


# ----------------------------------------------------------------------------- driver side
def _build_dataset(
    files: Sequence[str],
    model: str | Path,
    *,
    workers: int | None,
    batch_size: int,
    device: str,
    save_path: str | None,
    overlay: bool,
    save_json: bool,
    target_size: TargetSize | None,
    segmenter_kwargs: dict[str, Any],
) -> tuple[ray.data.Dataset, WorkerPlan, str]:
    import ray
    import ray.data

    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}.")
    plan = plan_workers(device, workers=workers, cluster=cluster_resources())
    package = ModelFiles.pack(
        model, home=segmenter_kwargs.pop("home", None), weights=segmenter_kwargs.pop("weights", "official")
    )
    model_ref = ray.put(package)
    # Reading is I/O: it reserves no CPU, so it never waits for the CPUs the actors hold.
    ds = ray.data.read_binary_files(list(files), include_paths=True, num_cpus=0)
    ds = ds.map_batches(
        SegmentBatch,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.workers),
        fn_constructor_args=(model_ref,),
        fn_constructor_kwargs={
            "plan": plan,
            "segmenter_kwargs": segmenter_kwargs,
            "save_path": save_path,
            "overlay": overlay,
            "save_json": save_json,
            "target_size": target_size,
        },
        **plan.ray_options(),
    )
    return ds, plan, package.name


def segment(
    inputs: str | Path | Sequence[str | Path],
    model: str | Path,
    *,
    save_path: str | Path,
    address: str | None = None,
    workers: int | None = None,
    batch_size: int = 1,
    device: str = "cpu",
    target_size: TargetSize | None = None,
    overlay: bool = False,
    save_json: bool = True,
    num_cpus: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    **segmenter_kwargs: Any,
) -> BatchReport:
    """Segment files on Ray and write ``<stem>_res.png`` (and ``_res.json``) into ``save_path``.

    Args:
        inputs: directory, file, glob, ``.txt`` list, remote URI, or a list of these.
        model: zoo name or converted model directory (resolved and shipped from here).
        save_path: output directory; on a multi-node cluster it must be shared by all nodes.
        address: Ray cluster address (``ray://host:10001`` or ``host:6379``); None = the Ray this
            process is connected to, else a new local one (shut down afterwards).
        workers: actors (default: one per listed device, or one per node on CPU).
        batch_size: images per ``map_batches`` call and per network call.
        device: ``cpu``, ``gpu:0,1,2`` (one actor per GPU), ... (see ``plan_workers``).
        num_cpus: CPUs of a locally started Ray (default: all).
        on_progress: called with (done, total) as results arrive.
        **segmenter_kwargs: passed to each actor's ``Segmenter`` (``options``, ``engine``, ...); ``weights`` and
            ``home`` choose the model here, before it is shipped.

    Returns:
        ``BatchReport``; inputs that failed are listed in ``failed``, the rest are written.

    Raises:
        InputError, DeviceError, MissingDependencyError, UnknownModelError, ModelDirError.
    """
    files, missing = list_inputs(inputs)
    failed = list(missing)
    total = len(files) + len(missing)
    done = len(missing)
    start = time.perf_counter()
    with ray_session(address=address, device=device, num_cpus=num_cpus):
        ds, plan, name = _build_dataset(
            files, model, workers=workers, batch_size=batch_size, device=device, save_path=str(save_path),
            overlay=overlay, save_json=save_json, target_size=target_size, segmenter_kwargs=dict(segmenter_kwargs),
        )
        ds.context.enable_progress_bars = False  # this dataset's own context: on_progress reports instead
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for path, ok, error in zip(batch["path"], batch["ok"], batch["error"]):
                    if not ok:
                        failed.append((str(path), str(error)))
                done += len(batch["path"])
                if on_progress is not None:
                    on_progress(done, total)
        except Exception as exc:  # an actor that cannot start (device, model): say why in one line
            cause = worker_error(exc)
            if cause is None:
                raise
            raise cause from None
    return BatchReport(
        total=total,
        succeeded=total - len(failed),
        failed=tuple(sorted(failed)),
        seconds=time.perf_counter() - start,
        plan=plan,
        model_name=name,
    )


def segment_dataset(
    inputs: str | Path | Sequence[str | Path],
    model: str | Path,
    *,
    workers: int | None = None,
    batch_size: int = 1,
    device: str = "cpu",
    target_size: TargetSize | None = None,
    **segmenter_kwargs: Any,
) -> ray.data.Dataset:
    """A lazy Ray Dataset of label maps: rows ``{"path", "ok", "error", "labels"}`` (HxW int32,
    empty where ``ok`` is False). Uses the Ray this process is connected to (starting a local
    one if none, as Ray Data does); the caller shuts it down.

    Raises:
        InputError: as ``list_inputs``, or missing files; MissingDependencyError: no Ray.
    """
    import ray

    files, missing = list_inputs(inputs)
    if missing:
        raise InputError(f"{len(missing)} input(s) missing, e.g. {missing[0][0]!r}.")
    if not ray.is_initialized():
        ray.init(include_dashboard=False)  # as Ray Data itself would; the caller shuts it down
    ds, _, _ = _build_dataset(
        files, model, workers=workers, batch_size=batch_size, device=device, save_path=None, overlay=False,
        save_json=False, target_size=target_size, segmenter_kwargs=dict(segmenter_kwargs),
    )
    return ds
