"""``fastseg predict``'s run over many inputs: every readable image is segmented and saved, an
unreadable one is recorded and skipped (PaddleX users expect a batch to finish), and the
failures are listed at the end.

The command line owns the options and the exit code; this module owns the loop and the text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastseg.errors import InputError
from fastseg.palettes import Palette, legend_names, paddlex_palette, present_labels, save_legend
from fastseg.processing import TargetSize
from fastseg.reference import weights_note
from fastseg.results import save_score_png
from fastseg.inputs import InputItem
from fastseg.segmenter import Segmenter


@dataclass(frozen=True)
class Failure:
    """An input that could not be read or decoded, and why (the message names the input)."""

    source: str
    reason: str


@dataclass
class BatchOutcome:
    """What a run did: results written, inputs skipped, seconds spent."""

    written: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    skipped_json: int = 0


def predict_to_dir(
    seg: Segmenter,
    items: Sequence[InputItem],
    out_dir: Path,
    *,
    batch_size: int | None = None,
    target_size: TargetSize | None = None,
    overlay: bool | float = False,
    palette: Palette | None = None,
    legend: Sequence[str] | None = None,
    save_scores: bool = False,
    write_json: bool = True,
    json_max_pixels: int | None = None,
    on_item: Callable[[], None] | None = None,
) -> BatchOutcome:
    """Segment ``items`` into ``out_dir`` (``<stem>_res.png``, ``<stem>_res.json``), skipping bad ones.

    Images are read one batch at a time, as ``Segmenter.predict`` reads them; an ``InputError``
    (missing, unreadable or corrupt image, failed URL) marks that input failed and the run goes
    on. Errors that are not about one input (disk full, a broken model) still stop the run.
    A label map over ``json_max_pixels`` gets its PNG only (counted in ``skipped_json``).
    ``overlay`` may be the blend's alpha; ``palette`` replaces PaddleX's colours; ``legend``
    (class names, may be empty) also writes ``<stem>_res_legend.png`` naming the classes present;
    ``save_scores`` writes ``<stem>_res_score.png`` (the winning class's probability, 0-255).
    """
    outcome = BatchOutcome()
    step = batch_size or seg.batch_size
    start = time.perf_counter()
    for first in range(0, len(items), step):
        ready: list[InputItem] = []
        for item in items[first : first + step]:
            try:
                ready.append(InputItem(source=item.source, image=item.load()))
            except InputError as exc:
                outcome.failures.append(Failure(item.source or "<array>", str(exc)))
                if on_item is not None:
                    on_item()
        for res in seg.predict(ready, batch_size=step, target_size=target_size) if ready else ():
            target = res.save_to_img(out_dir, overlay=overlay, palette=palette)
            if save_scores:
                save_score_png(target.with_name(f"{target.stem}_score.png"), res)
            if legend is not None:
                lut = palette.lut() if palette is not None else paddlex_palette()
                present = sorted(present_labels(res.labels_hw))
                names = legend_names(max(present, default=0) + 1, legend, palette.class_names if palette else ())
                save_legend(target.with_name(f"{target.stem}_legend.png"), present, names, lut)
            if write_json and (json_max_pixels is None or res.pred.size <= json_max_pixels):
                res.save_to_json(out_dir)
            elif write_json:
                outcome.skipped_json += 1
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
    lines += [f"  {f.reason}" for f in outcome.failures]
    return "\n".join(lines)
