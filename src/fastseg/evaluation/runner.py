"""``evaluate``: a model (or a built ``Segmenter``) over a labelled dataset -> ``EvalReport``.

Images flow in chunks: segment (at the source size, as PaddleSeg evaluates), read the labels,
check sizes, accumulate one confusion matrix. With ``against`` (``"paddle"``, another model, or
a ``Segmenter``) the same chunk also goes through the second model, whose metrics, label
agreement and delta are reported beside the first.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError
from fastseg.reference import Weights
from fastseg.evaluation.datasets import Dataset, Sample, load_dataset, read_label
from fastseg.evaluation.metrics import IGNORE_INDEX, ConfusionAccumulator, compare
from fastseg.evaluation.report import Comparison, EvalReport, write_outputs

if TYPE_CHECKING:
    from fastseg.segmenter import Segmenter

CHUNK = 8  # images per step; a Paddle child process per chunk with --against paddle


class _Labeler(Protocol):
    name: str
    engine: str

    def labels(self, chunk: Sequence[Sample]) -> list[npt.NDArray[Any]]: ...


@dataclass
class _SegmenterLabeler:
    segmenter: Segmenter  # its own batch size, engine and target size apply
    name: str = ""
    engine: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.segmenter.meta.model_name
        self.engine = getattr(self.segmenter, "engine_name", "ort")

    def labels(self, chunk: Sequence[Sample]) -> list[npt.NDArray[Any]]:
        results = self.segmenter.predict([str(s.image) for s in chunk])
        return [r.pred[0] for r in results]


@dataclass
class _PaddleLabeler:
    reference: Any  # PaddleReference (imported lazily: it pulls the converter modules)
    name: str = "paddle"
    engine: str = "paddle-inference"

    def labels(self, chunk: Sequence[Sample]) -> list[npt.NDArray[Any]]:
        from fastseg.inputs import InputItem

        images = [InputItem(source=str(s.image), path=s.image).load() for s in chunk]
        labels: list[npt.NDArray[Any]] = self.reference.labels(images)
        return labels


def _agreeing(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> int:
    return int(np.count_nonzero(a == b))


def _segmenter(
    model: str | Path | Segmenter, device: str, batch_size: int, engine: str | None, extra: Mapping[str, Any]
) -> tuple[Segmenter, bool]:
    """(segmenter, owned): build one from a name/dir, or use the caller's as it is."""
    from fastseg.segmenter import Segmenter

    if isinstance(model, Segmenter):
        return model, False
    return Segmenter(model, device=device, batch_size=batch_size, engine=engine or "auto", **extra), True


def evaluate(
    model: str | Path | Segmenter,
    dataset: str | Path | Dataset,
    *,
    val_list: str | Path | None = None,
    device: str = "cpu",
    engine: str | None = None,
    batch_size: int = 1,
    ignore_index: int = IGNORE_INDEX,
    against: str | Path | Segmenter | None = None,
    out_dir: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    segmenter_options: Mapping[str, Any] | None = None,
    weights: Weights = "official",
) -> EvalReport:
    """PaddleSeg's mIoU (and Acc, Kappa, Dice, per class) of ``model`` on a labelled dataset.

    Args:
        model: a zoo name, a converted model directory, or a built ``Segmenter`` (its engine,
            device, target size and other options are used untouched; it is not closed).
        dataset: a dataset directory (PaddleSeg list or Cityscapes layout) or a ``Dataset``.
        val_list: the list file (default ``<dataset>/val_list.txt``, else Cityscapes layout).
        device, engine, batch_size: used only when ``model`` is a name or directory.
        against: ``"paddle"`` (the source Paddle model from the provenance), another model
            name/directory (run on ``device`` with ONNX Runtime; a name with ``weights``), or a ``Segmenter``.
        out_dir: write ``eval.json`` and ``confusion.png`` there (atomically).
        progress: called with the number of images finished after each chunk.
        weights: ``official`` or ``reference`` (untrained; labelled in the report) for a zoo name.
        segmenter_options: more ``Segmenter`` arguments for a name/directory ``model`` (``slide``,
            ``slide_stride``, ``target_size``: what ``--slide`` and ``--protocol published`` set).

    Raises:
        InputError: a bad dataset or list line, unreadable label, label size != image size.
        MissingDependencyError, ModelDirError: ``against="paddle"`` without paddle or source.
    """
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, val_list=val_list)
    if not data.samples:
        raise InputError(f"Dataset {data.root} has no images.")
    with contextlib.ExitStack() as stack:
        seg, owned = _segmenter(model, device, batch_size, engine, {"weights": weights, **(segmenter_options or {})})
        if owned:
            stack.callback(seg.close)
        meta = seg.meta
        primary = _SegmenterLabeler(seg)
        other: _Labeler | None = None
        if against is not None:
            other = _against(against, seg, device, batch_size, stack, weights)
        start = time.perf_counter()
        acc = ConfusionAccumulator(meta.num_classes, ignore_index=ignore_index)
        other_acc = ConfusionAccumulator(meta.num_classes, ignore_index=ignore_index)
        agree = total = 0
        for first in range(0, len(data.samples), CHUNK):
            chunk = data.samples[first : first + CHUNK]
            preds = primary.labels(chunk)
            other_preds = other.labels(chunk) if other is not None else None
            for k, sample in enumerate(chunk):
                label = read_label(sample.label)
                if label.shape != preds[k].shape:
                    raise InputError(
                        f"Label {sample.label} is {label.shape[1]}x{label.shape[0]} but image {sample.image} is "
                        f"{preds[k].shape[1]}x{preds[k].shape[0]} (WxH): labels must match their image's size."
                    )
                acc.add(preds[k], label, name=str(sample.image))
                if other_preds is not None:
                    other_acc.add(other_preds[k], label, name=str(sample.image))
                    agree += _agreeing(preds[k], other_preds[k])
                    total += preds[k].size
            if progress is not None:
                progress(len(chunk))
        seconds = time.perf_counter() - start
        metrics = acc.metrics()
        comparison = None
        if other is not None:
            other_metrics = other_acc.metrics()
            comparison = Comparison(
                name=other.name, engine=other.engine, metrics=other_metrics,
                label_agreement=agree / total, delta=compare(metrics, other_metrics),
            )
        report = EvalReport(
            model=meta.model_name, model_dir=str(seg.model_dir), engine=primary.engine, dataset=str(data.root),
            layout=data.layout, class_names=tuple(meta.class_names), ignore_index=ignore_index,
            metrics=metrics, seconds=seconds, against=comparison, weights=meta.provenance.get("weights"),
        )
    if out_dir is not None:
        report.files.update({k: str(v) for k, v in write_outputs(report, Path(out_dir)).items()})
    return report


def _against(
    against: str | Path | Segmenter, seg: Segmenter, device: str, batch_size: int, stack: contextlib.ExitStack,
    weights: Weights = "official",
) -> _Labeler:
    """The second labeller for ``against`` (its resources are closed with ``stack``); a zoo name
    is resolved with the same ``weights`` as the evaluated model."""
    from fastseg.segmenter import Segmenter

    if isinstance(against, Segmenter):
        if against.meta.num_classes != seg.meta.num_classes:
            raise InputError(
                f"--against model {against.meta.model_name} has {against.meta.num_classes} classes, "
                f"{seg.meta.model_name} has {seg.meta.num_classes}: compare models of the same dataset."
            )
        return _SegmenterLabeler(against)
    if str(against) == "paddle":
        from fastseg.evaluation.paddle_ref import PaddleReference

        ref = stack.enter_context(PaddleReference(seg.meta))
        return _PaddleLabeler(ref, name=ref.name)
    # the baseline is fp32 ONNX Runtime even when the evaluated model runs on another engine
    named = not Path(str(against)).is_dir()  # a directory holds its own weights
    other = Segmenter(against, device=device, batch_size=batch_size, engine="ort", weights=weights if named else "official")
    stack.callback(other.close)
    return _against(other, seg, device, batch_size, stack)
