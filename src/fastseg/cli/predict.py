"""``fastseg predict`` (local or on Ray) and ``fastseg get-config``, which writes the pipeline
YAML that ``predict --pipeline`` reads."""

from __future__ import annotations

from pathlib import Path

import click

from fastseg.cli.options import (
    allow_fallback_option,
    device_option,
    engine_option,
    parse_target_size,
    ray_address_option,
    slide_options,
    weights_model,
    weights_option,
)

LARGE_JSON_PIXELS = 16_000_000  # a label map's JSON is ~3 bytes per pixel


@click.command("predict")
@click.option("--input", "input_", default=None,
              help="Image file, directory (recursive) or http(s) URL [default: the demo street photo shipped "
                   "in the package, fastseg/data/demo_street.jpg].")
@click.option("--model", default=None, help="Zoo model name or converted model directory [default: PP-LiteSeg-T].")
@weights_option()
@click.option("--pipeline", default=None, help="PaddleX pipeline YAML (its model/batch_size/target_size).")
@device_option()
@click.option("--save_path", "--save-path", "save_path", default="./output", show_default=True,
              help="Directory for <stem>_res.png and <stem>_res.json.")
@click.option("--batch_size", "--batch-size", "batch_size", type=click.IntRange(min=1), default=None,
              help="Images per network call [default: 1, or the pipeline's].")
@click.option("--target_size", "--target-size", "target_size", default=None, help="N or W,H; overrides the model's Resize.")
@click.option("--overlay", is_flag=True, help="Save the colour map blended over the input instead of the map alone.")
@allow_fallback_option()
@click.option("--no-json", "no_json", is_flag=True, help="Skip writing <stem>_res.json (label maps as JSON are large).")
@engine_option()
@click.option("--ray", "use_ray", is_flag=True, help="Run on Ray Data (the [ray] extra); implied by a device list such as gpu:0,1.")
@ray_address_option()
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Ray actors (with --ray) [default: one per listed device, or one per node on CPU].")
@click.option("--json", "force_json", is_flag=True,
              help="Write <stem>_res.json even for images over 16 MP (skipped by default: ~200 MB for 8000x8000).")
@slide_options()
def predict_cmd(
    input_: str | None,
    model: str | None,
    weights: str,
    pipeline: str | None,
    device: str,
    save_path: str,
    batch_size: int | None,
    target_size: str | None,
    overlay: bool,
    allow_fallback: bool,
    no_json: bool,
    engine: str,
    use_ray: bool,
    ray_address: str | None,
    workers: int | None,
    force_json: bool,
    slide: str | None,
    slide_stride: str | None,
    protocol: str,
) -> None:
    """Segment images and save PaddleX-style pseudo-colour maps and JSON.

    A directory's tree is mirrored under --save_path and no result overwrites another (same-stem
    files: good.jpg -> good_res.png, good.png -> good.png_res.png). An unreadable image is
    skipped: the others are written, the failures are listed at the end and the exit code is 1.
    """
    from tqdm import tqdm

    from fastseg.batch_predict import failures_text, predict_to_dir, summary_line
    from fastseg.demo_data import demo_image
    from fastseg.segmenter import DEFAULT_MODEL, Segmenter, create_pipeline, expand_inputs
    from fastseg.slide import window_options

    ts = parse_target_size(target_size)
    kwargs = window_options(
        model or DEFAULT_MODEL, slide=slide, slide_stride=slide_stride, protocol=protocol,
        keep_target_size=ts is not None,
    )
    if use_ray or ray_address or "," in device:
        from fastseg.ray.commands import run_predict

        run_predict(
            input_=input_ if input_ is not None else str(demo_image()),
            model=None if model is None else str(weights_model(model, weights)), pipeline=pipeline, device=device, save_path=save_path,
            batch_size=batch_size, target_size=ts, overlay=overlay, no_json=no_json, workers=workers,
            address=ray_address, segmenter_kwargs={"allow_fallback": allow_fallback, "engine": engine, **kwargs},
        )
        return
    if pipeline is not None:
        if model is not None:
            raise click.UsageError("Give --model or --pipeline, not both (the pipeline names its model).")
        if weights != "official":
            raise click.UsageError("--weights reference needs --model NAME, not --pipeline.")
        if kwargs or protocol != "paddlex":
            raise click.UsageError("--slide/--protocol work with --model, not --pipeline.")
        seg = create_pipeline(pipeline, device=device, allow_fallback=allow_fallback, engine=engine)
    else:
        model_arg = weights_model(model or DEFAULT_MODEL, weights)
        seg = Segmenter(model_arg, device=device, allow_fallback=allow_fallback, engine=engine, **kwargs)
    out_dir = Path(save_path)
    with seg:
        given = input_ if input_ is not None else str(demo_image())
        items = expand_inputs(given)
        with tqdm(total=len(items), unit="img", desc=seg.meta.model_name, disable=None) as bar:
            outcome = predict_to_dir(
                seg, items, out_dir, batch_size=batch_size, target_size=ts, overlay=overlay,
                write_json=not no_json, json_max_pixels=None if force_json else LARGE_JSON_PIXELS, given=[given],
                on_item=lambda: bar.update(1),
            )
        click.echo(summary_line(outcome, seg, device=device, out_dir=out_dir))
    if outcome.skipped_json:
        click.echo(
            f"Skipped <stem>_res.json for {outcome.skipped_json} image(s) over {LARGE_JSON_PIXELS // 1_000_000} MP "
            "(the PNG has the labels' colours; pass --json to write the JSON anyway)."
        )
    if outcome.failures:
        click.echo(failures_text(outcome), err=True)
        raise SystemExit(1)


@click.command("get-config")
@click.argument("pipeline", default="semantic_segmentation")
@click.option("--save_path", "--save-path", "save_path", default="./", show_default=True,
              help="Directory (gets <pipeline>.yaml) or a .yaml file path.")
def get_config_cmd(pipeline: str, save_path: str) -> None:
    """Write the default PaddleX-style pipeline YAML (edit it, then predict --pipeline it)."""
    from fastseg.segmenter import write_pipeline_config

    target = write_pipeline_config(Path(save_path), pipeline=pipeline)
    click.echo(f"Wrote {target}")
