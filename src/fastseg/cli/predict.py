"""``fastseg predict`` (local or on Ray) and ``fastseg get-config``, which writes the pipeline
YAML that ``predict --pipeline`` reads."""

from __future__ import annotations

from pathlib import Path

import click

from fastseg.cli.video import OVERLAY_ALPHA, VideoRun, run_videos, split_inputs, video_options
from fastseg.cli.options import (
    allow_fallback_option,
    device_option,
    engine_option,
    parse_target_size,
    ray_address_option,
    slide_options,
    weights_model,
    weights_option,
    window_options,
)
from fastseg.reference import Weights

LARGE_JSON_PIXELS = 16_000_000  # a label map's JSON is ~3 bytes per pixel


def _one_input(given: tuple[str, ...]) -> str | None:
    """``--input`` once: a second one must not silently replace the first."""
    if len(given) > 1:
        raise click.BadParameter(
            f"given {len(given)} times; pass one image, directory, URL or video (a directory holds many images).",
            param_hint="'--input'",
        )
    return given[0] if given else None


@click.command("predict")
@click.option("--input", "input_", multiple=True, callback=lambda ctx, param, value: _one_input(value),
              help="Image file, directory (recursive) or http(s) URL [default: the demo street photo shipped "
                   "in the package, fastseg/data/demo_street.jpg]; also a video, rtsp:// stream or camera:N.")
@click.option("--model", default=None, help="Zoo model name or converted model directory [default: PP-LiteSeg-T].")
@weights_option()
@click.option("--pipeline", default=None, help="PaddleX pipeline YAML (its model/batch_size/target_size).")
@device_option()
@click.option("--save_path", "--save-path", "save_path", default="./output", show_default=True,
              help="Directory for <stem>_res.png and <stem>_res.json.")
@click.option("--batch_size", "--batch-size", "batch_size", type=click.IntRange(min=1), default=None,
              help="Images per network call [default: 1, or the pipeline's].")
@click.option("--target_size", "--target-size", "target_size", default=None, help="N or W,H; overrides the model's Resize.")
@click.option("--overlay", type=click.FloatRange(0.0, 1.0), is_flag=False, flag_value=OVERLAY_ALPHA, default=None,
              metavar="[ALPHA]", help="Save the colour map blended over the input (ALPHA: the map's weight, "
                                      f"default {OVERLAY_ALPHA}) instead of the map alone.")
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
@video_options()
def predict_cmd(
    input_: str | None,
    model: str | None,
    weights: str,
    pipeline: str | None,
    device: str,
    save_path: str,
    batch_size: int | None,
    target_size: str | None,
    overlay: float | None,
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
    save_labels: bool,
    every: int,
    max_frames: int | None,
    fourcc: str | None,
    palette: str | None,
    legend: bool,
    save_scores: bool,
) -> None:
    """Segment images (and videos) and save PaddleX-style pseudo-colour maps and JSON.

    A video (file, directory of them, rtsp/http(s) stream, camera:N) becomes <stem>_res.mp4 of
    the same size, frame rate and frame count (docs/video.md).

    A directory's tree is mirrored under --save_path and no result overwrites another (same-stem
    files: good.jpg -> good_res.png, good.png -> good.png_res.png). An unreadable image is
    skipped: the others are written, the failures are listed at the end and the exit code is 1.
    """
    from tqdm import tqdm

    from fastseg.batch_predict import Extras, failures_text, predict_to_dir, summary_line
    from fastseg.demo_data import demo_image
    from fastseg.ray.devices import is_multi_device
    from fastseg.palettes import load_palette
    from fastseg.model_resolution import DEFAULT_MODEL
    from fastseg.segmenter import Segmenter
    from fastseg.pipeline import create_pipeline
    from fastseg.inputs import expand_inputs

    ts = parse_target_size(target_size)
    kwargs = window_options(
        model or DEFAULT_MODEL, slide=slide, slide_stride=slide_stride, protocol=protocol,
        keep_target_size=ts is not None,
    )
    source = input_ if input_ is not None else str(demo_image())
    videos, images = split_inputs(source)
    pal = load_palette(palette) if palette is not None else None
    if use_ray or ray_address or is_multi_device(device):
        from fastseg.ray.commands import run_predict

        if images is not None and (pal is not None or legend or save_scores):
            raise click.UsageError(
                "--palette, --legend and --save_scores run locally for images: drop --ray (and the device list); "
                "videos take them on Ray."
            )
        ray_model = None if model is None else str(weights_model(model, weights))
        seg_kwargs = {"allow_fallback": allow_fallback, "engine": engine, **kwargs}

        def images_on_ray() -> None:
            if images is not None:
                run_predict(
                    input_=source, model=ray_model, pipeline=pipeline, device=device, save_path=save_path,
                    batch_size=batch_size, target_size=ts, overlay=overlay is not None, no_json=no_json,
                    workers=workers, address=ray_address, segmenter_kwargs=seg_kwargs,
                )

        if not videos:
            images_on_ray()
            return
        if pipeline is not None:
            raise click.UsageError("--pipeline is not supported with --ray: give --model, --batch_size, --target_size.")
        from fastseg.cli.video import render_options, report_videos
        from fastseg.ray.video import ray_videos

        run = VideoRun(out_dir=Path(save_path), overlay=overlay, palette=pal, save_labels=save_labels,
                       save_scores=save_scores, legend=legend, every=every, max_frames=max_frames, fourcc=fourcc,
                       target_size=ts)
        with ray_videos(ray_model or DEFAULT_MODEL, device=device, workers=workers, address=ray_address,
                        batch_size=batch_size or 1, segmenter_kwargs={**seg_kwargs, "scores": save_scores}) as runner:
            render = render_options(runner.meta, run)
            report_videos(videos, run, lambda src, opened, advance: runner.segment(
                src, run.out_dir, render=render, every=every, max_frames=max_frames, target_size=ts,
                on_open=opened, on_frame=advance,
            ), where=f" on Ray: {runner.plan.workers} worker(s) on {runner.plan.device}")
            images_on_ray()  # in the same Ray session
        return
    # one image in this process: numba's compiled tail would cost more to load (~1 s) than it saves
    compiled_kernels = bool(videos) or not (isinstance(images, str) and _one_image(images))
    if pipeline is not None:
        if model is not None:
            raise click.UsageError("Give --model or --pipeline, not both (the pipeline names its model).")
        if kwargs or protocol != "paddlex":
            raise click.UsageError("--slide/--protocol work with --model, not --pipeline.")
        seg = create_pipeline(pipeline, device=device, allow_fallback=allow_fallback, engine=engine,
                              weights=_given_weights(weights), compiled_kernels=compiled_kernels)
        seg.scores = save_scores
    else:
        model_arg = weights_model(model or DEFAULT_MODEL, weights)
        seg = Segmenter(model_arg, device=device, allow_fallback=allow_fallback, engine=engine,
                        scores=save_scores, compiled_kernels=compiled_kernels, **kwargs)
    out_dir = Path(save_path)
    with seg:
        if save_scores and seg.meta.output_kind == "labels" and seg.head == "graph" and seg.slide is None:
            name = seg.meta.model_name
            fix = ("--slide gives scores for any model with dynamic H and W" if seg.meta.dynamic_hw else
                   f"its input is frozen, so convert it with '--head logits' (fastseg convert {name} --head logits)")
            raise click.ClickException(
                f"--save_scores: {name}'s graph ends in ArgMax and fastseg's banded head cannot "
                f"reproduce its tail, so there are no logits to score (docs/video.md); {fix}."
            )
        if videos:
            if batch_size is not None:
                seg.batch_size = batch_size
            run_videos(seg, videos, VideoRun(
                out_dir=out_dir, overlay=overlay, palette=pal, save_labels=save_labels, save_scores=save_scores, legend=legend,
                every=every, max_frames=max_frames, fourcc=fourcc, target_size=ts,
            ))
        if images is None:
            return
        items = expand_inputs(images)
        extras = Extras(palette=pal, legend=seg.meta.class_names if legend else None, save_scores=save_scores)
        with tqdm(total=len(items), unit="img", desc=seg.meta.model_name, disable=None) as bar:
            outcome = predict_to_dir(
                seg, items, out_dir, batch_size=batch_size, target_size=ts,
                overlay=False if overlay is None else overlay, extras=extras,
                write_json=not no_json, json_max_pixels=None if force_json else LARGE_JSON_PIXELS, given=[source],
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


def _one_image(source: str) -> bool:
    """Whether ``--input`` names one image (a file or URL), not a directory."""
    return source.lower().startswith(("http://", "https://")) or Path(source).expanduser().is_file()


def _given_weights(weights: str) -> Weights | None:
    """``--weights`` when given on the command line, else None: a pipeline YAML's own ``weights`` applies."""
    source = click.get_current_context().get_parameter_source("weights")
    if source is None or source == click.core.ParameterSource.DEFAULT:
        return None
    return "reference" if weights == "reference" else "official"


@click.command("get-config")
@click.argument("pipeline", default="semantic_segmentation")
@click.option("--save_path", "--save-path", "save_path", default="./", show_default=True,
              help="Directory (gets <pipeline>.yaml) or a .yaml file path.")
def get_config_cmd(pipeline: str, save_path: str) -> None:
    """Write the default PaddleX-style pipeline YAML (edit it, then predict --pipeline it)."""
    from fastseg.pipeline_config import write_pipeline_config

    target = write_pipeline_config(Path(save_path), pipeline=pipeline)
    click.echo(f"Wrote {target}")
