"""Batch segmentation on Ray Data: the files stay where they are, a pool of actors each holding
ONE ``Segmenter`` reads, decodes and segments them (``map_batches`` over input indices), and
each actor writes the same files under the same names as ``fastseg predict``
(``batch_predict.save_outputs``, names from ``fastseg.output_names``: the input tree mirrored,
no two inputs on one name). A file that cannot be read, decoded, segmented or saved becomes a
failure row; it never stops the job.

The dataset carries indices, not paths: the driver ships the (path, output name) list once
through the object store, so a file name that is not valid UTF-8 or holds a newline never has
to pass through Arrow (which cannot hold the first and used to abort the job on both).

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

from fastseg.batch_predict import save_outputs
from fastseg.errors import FastSegError, InputError
from fastseg.output_names import output_stems, printable
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


def _given(inputs: str | Path | Sequence[str | Path]) -> list[str]:
    """What the user passed, as strings (its directories anchor the mirrored output tree)."""
    return [str(inputs)] if isinstance(inputs, (str, Path)) else [str(i) for i in inputs]


# ----------------------------------------------------------------------------- the actor
def _ray_get(ref: Any) -> Any:
    import ray

    return ray.get(ref)


def _read(path: str) -> bytes:
    """A local file's bytes, or an object store URI's (``s3://...``, through pyarrow's file systems).

    Raises:
        InputError: the file cannot be read (the message names it, printably).
    """
    try:
        if "://" in path:
            import pyarrow.fs

            fs, inner = pyarrow.fs.FileSystem.from_uri(path)
            with fs.open_input_stream(inner) as stream:
                return bytes(stream.read())
        with open(path, "rb") as fh:
            return fh.read()
    except (OSError, ValueError) as exc:  # pyarrow raises OSError subclasses or ArrowInvalid (ValueError)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"Cannot read image {printable(path)!r}: {reason}.") from exc


class SegmentBatch:
    """A Ray Data callable class: one ``Segmenter`` per actor, built once, used for every batch.

    ``jobs``: (path or URI, output stem) per input. Input batch: ``{"data": int[]}`` (indices
    into ``jobs``, from ``ray.data.from_numpy``). Output: ``{"id", "ok", "error"}`` plus ``"path"``
    (printable) and ``"labels"`` (HxW int32; empty on failure) when ``save_path`` is None.
    """

    def __init__(
        self,
        model: ModelFiles | Any,
        jobs: Sequence[tuple[str, str]] | Any,
        *,
        plan: WorkerPlan,
        segmenter_kwargs: Mapping[str, Any],
        save_path: str | None,
        overlay: bool,
        save_json: bool,
        target_size: TargetSize | None,
    ) -> None:
        self._jobs: Sequence[tuple[str, str]] = jobs if isinstance(jobs, (list, tuple)) else _ray_get(jobs)
        self._worker = WorkerSegmenter(
            fetch_model(model), device=plan.device, threads=plan.intra_op_threads, segmenter_kwargs=segmenter_kwargs
        )
        self._save_path = None if save_path is None else Path(save_path)
        self._overlay = overlay
        self._save_json = save_json
        self._target_size = target_size

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        ids = [int(i) for i in batch["data"]]
        errors: dict[int, str] = {}
        items: dict[int, InputItem] = {}
        for i, job in enumerate(ids):
            path = self._jobs[job][0]
            try:
                items[i] = InputItem(source=path, image=decode_image(_read(path), source=repr(printable(path))))
            except FastSegError as exc:
                errors[i] = str(exc)
        labels: dict[int, npt.NDArray[np.int32]] = {}
        for i, result in self._predict(items, errors):
            if self._save_path is not None:
                try:
                    save_outputs(
                        result, self._save_path, self._jobs[ids[i]][1], overlay=self._overlay, write_json=self._save_json
                    )
                except (FastSegError, OSError) as exc:
                    errors[i] = f"saving failed: {exc}"
                    continue
            labels[i] = result.labels_hw
        out: dict[str, Any] = {
            "id": np.array(ids, dtype=np.int64),
            "ok": np.array([i not in errors for i in range(len(ids))], dtype=bool),
            "error": np.array([" ".join(printable(errors.get(i, "")).split()) for i in range(len(ids))], dtype=object),
        }
        if self._save_path is None:
            out["path"] = np.array([printable(self._jobs[j][0]) for j in ids], dtype=object)
            out["labels"] = [labels.get(i, _NO_LABELS) for i in range(len(ids))]
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


# ----------------------------------------------------------------------------- driver side
def _build_dataset(
    files: Sequence[str],
    model: str | Path,
    *,
    given: Sequence[str],
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
    jobs_ref = ray.put(list(zip(files, output_stems(files, given=given))))
    # Indices made here, in blocks of one batch (so every actor gets work): no read task, which
    # would wait for a CPU while the actors hold them all.
    blocks = np.array_split(np.arange(len(files), dtype=np.int64), -(-len(files) // batch_size))
    ds: ray.data.Dataset = ray.data.from_numpy(blocks)
    ds = ds.map_batches(
        SegmentBatch,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.workers),
        fn_constructor_args=(model_ref, jobs_ref),
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
            files, model, given=_given(inputs), workers=workers, batch_size=batch_size, device=device, save_path=str(save_path),
            overlay=overlay, save_json=save_json, target_size=target_size, segmenter_kwargs=dict(segmenter_kwargs),
        )
        ds.context.enable_progress_bars = False  # this dataset's own context: on_progress reports instead
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for job, ok, error in zip(batch["id"], batch["ok"], batch["error"]):
                    if not ok:
                        failed.append((files[int(job)], str(error)))
                done += len(batch["id"])
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
    """A lazy Ray Dataset of label maps: rows ``{"id", "path", "ok", "error", "labels"}`` (``path``
    printable, see ``output_names.printable``; ``labels`` HxW int32, empty where ``ok`` is False). Uses the Ray this process is connected to (starting a local
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
        files, model, given=_given(inputs), workers=workers, batch_size=batch_size, device=device, save_path=None, overlay=False,
        save_json=False, target_size=target_size, segmenter_kwargs=dict(segmenter_kwargs),
    )
    return ds
