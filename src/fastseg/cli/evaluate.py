"""``fastseg eval``: parsing and printing only; ``fastseg.evaluation.runner.evaluate`` does the
work. Heavy modules are imported when the command runs."""

from __future__ import annotations

from pathlib import Path

import click

from fastseg.cli.options import device_option, slide_options, weights_model, weights_option, window_options


@click.command("eval")
@click.option("--model", required=True, help="Zoo model name or converted model directory.")
@weights_option(help_suffix=" Its figures are labelled UNTRAINED in the table and eval.json.")
@click.option("--dataset", "dataset_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Dataset directory: PaddleSeg list ('image label' lines) or Cityscapes layout.")
@click.option("--val-list", "--val_list", "val_list", default=None,
              help="List file, relative to --dataset or a path [default: val_list.txt, else Cityscapes layout].")
@click.option("--out", "out_dir", default="eval-out", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for eval.json and confusion.png.")
@device_option()
@click.option("--engine", default=None, help="Inference engine (auto, ort, openvino, ...) [default: the Segmenter's].")
@click.option("--batch_size", "--batch-size", "batch_size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images per network call.")
@click.option("--ignore-index", "--ignore_index", "ignore_index", type=int, default=255, show_default=True,
              help="Label value that is not scored.")
@click.option("--against", default=None,
              help="Also evaluate 'paddle' (the source Paddle model, from the provenance) or another model "
                   "name/dir (fp32 ONNX Runtime), and print both mIoUs, the label agreement and the delta.")
@slide_options()
def eval_cmd(
    model: str,
    weights: str,
    dataset_dir: Path,
    val_list: str | None,
    out_dir: Path,
    device: str,
    engine: str | None,
    batch_size: int,
    ignore_index: int,
    against: str | None,
    slide: str | None,
    slide_stride: str | None,
    protocol: str,
) -> None:
    """mIoU, Acc, Kappa and Dice of MODEL on a labelled dataset, exactly as PaddleSeg computes them."""
    from rich.console import Console
    from rich.markup import escape
    from tqdm import tqdm

    from fastseg.evaluation.datasets import load_dataset
    from fastseg.evaluation.report import comparison_lines, render_table, summary_line, warnings_for
    from fastseg.evaluation.runner import evaluate

    data = load_dataset(dataset_dir, val_list=val_list)  # list errors before a model loads
    options = window_options(model, slide=slide, slide_stride=slide_stride, protocol=protocol)
    model_arg: str | Path = weights_model(model, weights)
    if isinstance(model_arg, str) and Path(model_arg).is_dir():
        model_arg = Path(model_arg)
    against_arg: str | Path | None = against
    if against is not None and against != "paddle" and Path(against).is_dir():
        against_arg = Path(against)
    with tqdm(total=len(data), unit="img", desc="eval", disable=None) as bar:
        report = evaluate(
            model_arg, data, device=device, engine=engine, batch_size=batch_size, ignore_index=ignore_index,
            against=against_arg, out_dir=out_dir, progress=bar.update, segmenter_options=options,
        )
    console = Console(width=max(100, Console().width))
    console.print(render_table(report))
    for line in warnings_for(report):
        console.print(f"[yellow]Warning:[/] {escape(line)}")
    for line in (summary_line(report), *comparison_lines(report)):
        click.echo(line)
    if "confusion" not in report.files:
        click.echo("confusion.png skipped: matplotlib is not installed (pip install 'fastseg-ort[eval]').")
    n = report.metrics.num_images
    click.echo(
        f"{n} image(s) in {report.seconds:.1f} s ({1000 * report.seconds / n:.0f} ms/image) -> "
        + ", ".join(report.files.values())
    )
