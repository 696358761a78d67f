"""``fastseg predict``'s run over many inputs: every readable image is segmented and saved, an
unreadable one is recorded and skipped (PaddleX users expect a batch to finish), and the
failures are listed at the end.

The command line owns the options and the exit code; this module owns the loop and the text.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastseg.errors import InputError
from fastseg.inputs import InputItem
from fastseg.output_names import output_stems, printable
from fastseg.palettes import Palette, legend_names, paddlex_palette, present_labels, save_legend
from fastseg.processing import TargetSize
from fastseg.reference import weights_note
from fastseg.results import SegResult, save_score_png
from fastseg.segmenter import Segmenter


@dataclass(frozen=True)
class Failure:
    """An input that could not be read or decoded, and why (the message names the input)."""

    source: str  # printable (one line)
    reason: str  # one line


@dataclass
class BatchOutcome:
    """What a run did: results written, inputs skipped, seconds spent."""

    written: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    skipped_json: int = 0


# A save failing with these is about its name (too long, or not representable on this file
# system): that input fails, the run goes on. Any other OSError (full, read-only, not a
# directory, no access) would fail every later save too, so it stops the run.
_NAME_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL})


@dataclass(frozen=True)
class Extras:
    """What a run writes beside each label map: ``palette`` replaces PaddleX's colours;
    ``legend`` (class names, may be empty) writes ``<stem>_res_legend.png`` naming the classes
    present; ``save_scores`` writes ``<stem>_res_score.png`` (the winning class's probability)."""

    palette: Palette | None = None
    legend: Sequence[str] | None = None
    save_scores: bool = False


def save_outputs(
    res: SegResult, out_dir: Path, stem: str, *, overlay: bool | float, write_json: bool, extras: Extras = Extras()
) -> None:
    """Write ``<out_dir>/<stem>_res.png`` (and ``_res.json``, score and legend images): how local
    and Ray runs save a result.

    Raises:
        InputError: this one result cannot be saved under its name; the run goes on.
        OSError: the output directory cannot take results at all (full, read-only, no access).
    """
    try:
        target = res.save_to_img(out_dir / f"{stem}_res.png", overlay=overlay, palette=extras.palette)
        if extras.save_scores:
            save_score_png(target.with_name(f"{target.stem}_score.png"), res)
        if extras.legend is not None:
            palette = extras.palette
            present = sorted(present_labels(res.labels_hw))
            names = legend_names(max(present, default=0) + 1, extras.legend, palette.class_names if palette else ())
            save_legend(target.with_name(f"{target.stem}_legend.png"), present, names,
                        palette.lut() if palette is not None else paddlex_palette())
        if write_json:
            res.save_to_json(out_dir / f"{stem}_res.json")
    except OSError as exc:
        if exc.errno not in _NAME_ERRNOS:
            raise
        raise InputError(f"Cannot save the result of {printable(res.input_path or stem)!r}: {exc.strerror or exc}.") from exc


def _segment(
    seg: Segmenter, ready: Sequence[InputItem], step: int, target_size: TargetSize | None
) -> list[SegResult | InputError]:
    """The batch's results; if the batch fails on an input, each input alone (its error in its place)."""
    try:
        return list(seg.predict(list(ready), batch_size=step, target_size=target_size))
    except InputError:
        if len(ready) == 1:
            raise
    out: list[SegResult | InputError] = []
    for item in ready:
        try:
            out.extend(seg.predict([item], batch_size=1, target_size=target_size))
        except InputError as exc:
            out.append(exc)
    return out


def predict_to_dir(
    seg: Segmenter,
    items: Sequence[InputItem],
    out_dir: Path,
    *,
    batch_size: int | None = None,
    target_size: TargetSize | None = None,
    overlay: bool | float = False,
    extras: Extras = Extras(),
    write_json: bool = True,
    json_max_pixels: int | None = None,
    given: Sequence[str] = (),
    on_item: Callable[[], None] | None = None,
) -> BatchOutcome:
    """Segment ``items`` into ``out_dir`` (``<stem>_res.png``, ``<stem>_res.json``), skipping bad ones.

    Output names follow ``fastseg.output_names`` (the input tree mirrored, no two inputs on one
    name; ``given``: what the user passed, whose directories anchor the tree). Images are read
    one batch at a time, as ``Segmenter.predict`` reads them; an ``InputError`` (missing,
    unreadable or corrupt image, failed URL, a result that cannot be saved under its name)
    marks that input failed and the run goes on. Errors that are not about one input (disk
    full, a broken model) still stop the run. A label map over ``json_max_pixels`` gets its
    PNG only (counted in ``skipped_json``). ``overlay`` may be the blend's alpha; ``extras``:
    palette, legend, score maps.
    """
    outcome = BatchOutcome()
    step = batch_size or seg.batch_size
    stems = output_stems([item.source or f"image{i}" for i, item in enumerate(items)], given=given)
    start = time.perf_counter()

    def failed(item: InputItem, exc: InputError) -> None:
        outcome.failures.append(Failure(printable(item.source or "<array>"), " ".join(str(exc).split())))
        if on_item is not None:
            on_item()

    for first in range(0, len(items), step):
        ready: list[tuple[InputItem, str]] = []
        for item, stem in zip(items[first : first + step], stems[first : first + step]):
            try:
                ready.append((InputItem(source=item.source, image=item.load()), stem))
            except InputError as exc:
                failed(item, exc)
        results = _segment(seg, [item for item, _ in ready], step, target_size) if ready else []
        for (item, stem), res in zip(ready, results):
            try:
                if isinstance(res, InputError):
                    raise res
                with_json = write_json and (json_max_pixels is None or res.pred.size <= json_max_pixels)
                save_outputs(res, out_dir, stem, overlay=overlay, write_json=with_json, extras=extras)
            except InputError as exc:
                failed(item, exc)
                continue
            outcome.skipped_json += write_json and not with_json
            outcome.written += 1
            if on_item is not None:
                on_item()
    outcome.seconds = time.perf_counter() - start
    return outcome


def summary_line(outcome: BatchOutcome, seg: Segmenter, *, device: str, out_dir: Path) -> str:
    """The run's one-line summary; it names the weights when they are untrained reference ones."""
    count = outcome.written
    note = weights_note(seg.meta)
    weights = f" [{note}]" if note else ""
    precision = f" ({seg.precision_label})" if seg.precision != "fp32" else ""  # int8, gated or UNGATED
    return (
        f"{count} image(s) in {outcome.seconds:.2f} s ({1000 * outcome.seconds / max(count, 1):.1f} ms/image, "
        f"including reading and saving) with {seg.meta.model_name}{weights}{precision} on {device} "
        f"({', '.join(seg.providers)}) -> {out_dir}"  # OpenVINO's reads "OpenVINO:CPU"
    )


def failures_text(outcome: BatchOutcome) -> str:
    """The failed inputs, one per line, after a header saying the other results were written."""
    total = outcome.written + len(outcome.failures)
    lines = [f"{len(outcome.failures)} of {total} image(s) failed (the other results are written):"]
    lines += [f"  {f.source}: {f.reason}" for f in outcome.failures]
    return "\n".join(lines)
