"""``convert_model``: Paddle inference model -> verified fastseg model directory.

Steps: locate the source -> (legacy: translate to PIR) -> strip the head and declare adaptive
pool inputs static (JSON edits) -> paddle2onnx in a child process -> exact dynamic adaptive
pools -> onnx checker + shape inference -> requested head -> verify against Paddle Inference
-> write ``model.onnx`` + ``fastseg.json`` into a stage dir beside the target, then swap it in
(``fastseg.tempdirs.staged_dir``: the old output stays whole until the new one is in place).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fastseg.convert import engine, pir_program
from fastseg.convert.scratch import sigterm_exits_cleanly
from fastseg.convert.sources import PaddleSource, open_source, palette, read_deploy_config
from fastseg.errors import ConversionError, ModelDirError
from fastseg.model_dir import ONNX_FILE, OUTPUT_KINDS, ModelMeta, is_model_dir, read_meta, write_meta
from fastseg.tempdirs import new_scratch_dir, staged_dir
from fastseg.zoo import converted_model_dir, load_zoo

DEFAULT_VERIFY_SIZES: tuple[tuple[int, int], ...] = ((256, 512), (97, 211))
DEFAULT_THRESHOLD = 0.999


@dataclass(frozen=True)
class ConvertReport:
    """What ``convert_model`` did; ``verification`` is also stored in ``meta.verification``."""

    output_dir: Path
    model_name: str
    paddle_format: str
    opset: int
    seconds: float
    onnx_bytes: int
    cache_hit: bool
    verification: dict[str, Any]
    meta: ModelMeta


def choose_opset(program: pir_program.Program) -> tuple[int, str]:
    """The opset for a program, with the reason recorded in the provenance.

    17 everywhere: it is the first opset with a native LayerNormalization (SegFormer,
    SeaFormer: one fused kernel in ORT, ~15% faster than the decomposed form on SegFormer-B0 and
    safer in fp16), and for the CNN families (DeepLab, OCRNet, PP-LiteSeg) opsets 11-19
    produce the same graph numerics (measured), so one opset keeps the graph rewrites in one
    form (ReduceMean axes as an attribute, < 18). ORT >= 1.18 (our floor) runs opset 17.
    """
    if pir_program.has_op(program, "layer_norm"):
        return 17, "layer_norm present: opset 17 exports native LayerNormalization"
    return 17, "CNN: opsets 11-19 give identical numerics; 17 kept for one uniform graph form"


def _finish_onnx(model: Any) -> Any:
    """Drop unused initializers, run the checker and shape inference."""
    import onnx

    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    try:
        onnx.checker.check_model(model)
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ConversionError(f"The exported ONNX graph is invalid: {exc}") from exc


def _resolve_output(output: Path | None, model_name: str) -> Path:
    return Path(output) if output is not None else converted_model_dir(model_name)


def _refuse_foreign_target(target: Path) -> None:
    """A converted model replaces only a converted model: never a user's other files."""
    if target.exists() and not is_model_dir(target) and (not target.is_dir() or any(target.iterdir())):
        raise ConversionError(
            f"Output {str(target)!r} exists and is not a fastseg model directory; "
            "choose a new or empty directory for -o/--output (nothing was written)."
        )


def _cached(target: Path, sha: str, options: dict[str, Any], *, verify: bool, threshold: float) -> ModelMeta | None:
    """The existing output's meta when it came from the same source with the same options
    (and, when verifying, passed ``threshold``); else None."""
    if not is_model_dir(target):
        return None
    try:
        meta = read_meta(target)
    except ModelDirError:
        return None
    prov = meta.provenance
    if prov.get("source_sha256") != sha or prov.get("options") != options:
        return None
    if verify and float(meta.verification.get("min_argmax_agreement", -1.0)) < threshold:
        return None
    return meta


def _labels_spec(model_name: str, num_classes: int) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    spec = load_zoo().models.get(model_name)
    if spec is not None and spec.dataset.num_classes == num_classes:
        return spec.dataset.class_names, spec.dataset.palette
    return tuple(f"class_{i}" for i in range(num_classes)), palette(num_classes)


def _num_classes(logits_model: Any, input_name: str, probe_hw: tuple[int, int]) -> int:
    """Classes from the logits output's static channel dim, else from one probe run."""
    dims = logits_model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 4 and dims[1].HasField("dim_value") and dims[1].dim_value > 0:
        return int(dims[1].dim_value)
    import onnxruntime as ort

    sess = ort.InferenceSession(logits_model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {input_name: np.zeros((1, 3, *probe_hw), np.float32)})[0]
    return int(out.shape[1])


@sigterm_exits_cleanly()
def convert_model(
    source: Path,
    output: Path | None = None,
    *,
    model_name: str | None = None,
    head: str = "labels",
    opset: int | None = None,
    verify: bool = True,
    images_dir: Path | None = None,
    verify_sizes: Sequence[tuple[int, int]] = DEFAULT_VERIFY_SIZES,
    threshold: float = DEFAULT_THRESHOLD,
    force: bool = False,
    fixed_hw: tuple[int, int] | None = None,
) -> ConvertReport:
    """Convert a Paddle segmentation inference model to a verified fastseg model directory.

    Args:
        source: an official ``*_infer.tar`` or an exported inference directory (PIR
            ``inference.json`` or legacy ``*.pdmodel``, plus ``.pdiparams`` and its yml).
        output: target directory; default ``<cache_home>/models/<model name>``.
        model_name: used when the source's ``inference.yml`` has no ``Global.model_name``.
        head: ``labels`` ([N,H,W] int32), ``logits`` or ``probs`` ([N,C,H,W] float32).
        opset: ONNX opset; default per family (see ``choose_opset``).
        verify: compare with Paddle Inference and refuse results below ``threshold``.
        images_dir: verify on these images (own sizes) instead of synthetic ones.
        verify_sizes: (height, width) of the synthetic inputs; a batch of 2 at the first size.
        threshold: minimum argmax agreement (fraction) over every verification input.
        force: convert even when ``output`` already holds this source converted the same way.
        fixed_hw: (height, width) to freeze the input size; H and W are dynamic by default.

    Raises:
        MissingDependencyError: paddlepaddle / paddle2onnx / onnx not installed.
        ModelDirError: missing source, corrupt or unsafe tarball.
        ConversionError: unsupported model, paddle2onnx failure, or parity below threshold.
    """
    started = time.perf_counter()
    if head not in OUTPUT_KINDS:
        raise ConversionError(f"Unknown head {head!r}; choose one of {', '.join(OUTPUT_KINDS)}.")
    if not 0.0 < threshold <= 1.0:
        raise ConversionError(f"threshold must be in (0, 1], got {threshold}.")
    if opset is not None and not 11 <= opset <= 20:
        raise ConversionError(f"opset {opset} is not supported; choose 11-20 (default 17).")
    if fixed_hw is not None and (fixed_hw[0] < 1 or fixed_hw[1] < 1):
        raise ConversionError(f"fixed shape must be positive, got {fixed_hw}.")
    source = Path(source)
    if not source.exists():
        raise ModelDirError(f"{source} does not exist; pass a Paddle inference directory or its .tar.")
    engine.require_convert_deps()

    work_dir = new_scratch_dir("convert")  # sweeps what conversions killed with -9 left
    scratch = work_dir.path
    try:
        src = open_source(source, scratch)
        config = read_deploy_config(src.config_file)
        name = config.model_name or model_name or src.default_name
        target = _resolve_output(output, name)
        _refuse_foreign_target(target)
        options = {"head": head, "opset": opset, "fixed_hw": list(fixed_hw) if fixed_hw else None, "fold_decoder": True,
                   "mask_tail": True}
        if not force:
            meta = _cached(target, src.sha256, options, verify=verify, threshold=threshold)
            if meta is not None:
                return ConvertReport(
                    output_dir=target,
                    model_name=meta.model_name,
                    paddle_format=str(meta.provenance.get("paddle_format", src.paddle_format)),
                    opset=meta.opset,
                    seconds=time.perf_counter() - started,
                    onnx_bytes=(target / ONNX_FILE).stat().st_size,
                    cache_hit=True,
                    verification=meta.verification,
                    meta=meta,
                )
        return _convert(
            source_path=source,
            src=src,
            scratch=scratch,
            name=name,
            target=target,
            head=head,
            opset=opset,
            options=options,
            preprocess_config=config,
            verify=verify,
            images_dir=images_dir,
            verify_sizes=[fixed_hw] if fixed_hw else list(verify_sizes),
            threshold=threshold,
            fixed_hw=fixed_hw,
            started=started,
        )
    finally:
        work_dir.close()


def _convert(
    *,
    source_path: Path,
    src: PaddleSource,
    scratch: Path,
    name: str,
    target: Path,
    head: str,
    opset: int | None,
    options: dict[str, Any],
    preprocess_config: Any,
    verify: bool,
    images_dir: Path | None,
    verify_sizes: list[tuple[int, int]],
    threshold: float,
    fixed_hw: tuple[int, int] | None,
    started: float,
) -> ConvertReport:
    import onnx

    from fastseg.convert.adaptive_pool import replace_adaptive_pools
    from fastseg.convert.decoder_fold import fold_decoder_fuse
    from fastseg.convert.heads import attach_head
    from fastseg.convert.mask_tail import drop_dead_nodes, rewrite_mask_tail

    work = scratch / "work"
    work.mkdir()
    timings: dict[str, float] = {}
    lap = time.perf_counter()

    def _lap(phase: str) -> None:
        nonlocal lap
        now = time.perf_counter()
        timings[phase] = round(now - lap, 2)
        lap = now

    # 1. a PIR program (legacy ProgramDesc translated in the child)
    if src.paddle_format == "legacy":
        engine.run_paddle_worker(
            "to_pir",
            work,
            what="Translating the legacy .pdmodel to PIR",
            model_file=str(src.model_file),
            params_file=str(src.params_file),
            out_prefix=str(work / "pir" / "inference"),
        )
        pir_json, params = work / "pir" / "inference.json", work / "pir" / "inference.pdiparams"
    else:
        pir_json, params = src.model_file, src.params_file
    _lap("to_pir")
    try:
        program = json.loads(pir_json.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{pir_json.name} is not a readable PIR JSON program ({exc}).") from exc

    # A fixed-shape export (PaddleX's MaskFormer: [1, 3, 512, 512]) runs at that size only.
    static_batch, static_hw = pir_program.static_input_shape(program)
    fixed_hw = pir_program.check_fixed_hw(static_hw, fixed_hw)
    if static_hw is not None and images_dir is None:
        verify_sizes = [static_hw]

    # 2. JSON edits: logits program, adaptive pool inputs static
    pools = pir_program.adaptive_pools(program)
    logits_program, head_info = pir_program.strip_program_head(program)
    chosen_opset, opset_reason = choose_opset(program) if opset is None else (opset, "asked for")
    logits_json = work / "logits.json"
    logits_json.write_text(json.dumps(logits_program), encoding="utf-8")
    export_json = work / "export.json"
    export_json.write_text(
        json.dumps(pir_program.make_adaptive_inputs_static(logits_program) if pools else logits_program),
        encoding="utf-8",
    )

    # 3. paddle2onnx in a child process
    raw_onnx = work / "raw.onnx"
    engine.run_paddle_worker(
        "export",
        work,
        what="paddle2onnx",
        model_file=str(export_json),
        params_file=str(params),
        save_file=str(raw_onnx),
        opset=chosen_opset,
    )
    _lap("paddle2onnx")
    logits_model, decoder_folds = fold_decoder_fuse(replace_adaptive_pools(onnx.load(str(raw_onnx)), pools))
    input_name = logits_model.graph.input[0].name
    if fixed_hw is not None:
        dims = logits_model.graph.input[0].type.tensor_type.shape.dim
        dims[2].Clear()
        dims[2].dim_value = fixed_hw[0]
        dims[3].Clear()
        dims[3].dim_value = fixed_hw[1]
    num_classes = _num_classes(logits_model, input_name, fixed_hw or (64, 64))
    # checker + shape inference once, on the final graph (logits graph + 1-2 head nodes)
    # MaskFormer: labels computed channels-last, mask einsum on the last decoder layer (convert/mask_tail.py);
    # the old tail's nodes stay until the verification has read its scores
    final_model, tail = rewrite_mask_tail(attach_head(logits_model, head, opset=chosen_opset), labels=head == "labels")
    final_model = _finish_onnx(final_model)

    _lap("onnx_rewrite_check")
    # 4. verification against Paddle Inference
    verification: dict[str, Any] = {"skipped": True}
    if verify:
        from fastseg.convert.verify import verify_against_paddle

        verification = verify_against_paddle(
            work=work,
            src=src,
            logits_json=logits_json,
            params=params,
            logits_model=logits_model,
            final_model=final_model,
            preprocess=preprocess_config.preprocess,
            images_dir=images_dir,
            verify_sizes=verify_sizes,
            fixed_hw=fixed_hw,
            batch2=static_batch is None,
        )
        verification["threshold"] = threshold
        _lap("verify")
        if verification["min_argmax_agreement"] < threshold:
            worst = min(verification["inputs"].items(), key=lambda kv: kv[1]["argmax_agreement"])
            ties = ""
            if "max_top2_margin_at_disagreements" in worst[1]:
                ties = (
                    f"; its {worst[1]['disagreeing_pixels']} disagreeing pixels have Paddle top-2 margins "
                    f"<= {worst[1]['max_top2_margin_at_disagreements']:.3g} (median margin "
                    f"{worst[1]['median_top2_margin']:.3g})"
                )
            raise ConversionError(
                f"Verification failed: argmax agreement {verification['min_argmax_agreement']:.5%} < "
                f"threshold {threshold:.3%} (worst input {worst[0]}, max |logit diff| "
                f"{verification['max_abs_logit_diff']:.3g}{ties}); nothing written. Report the model, or "
                "lower --threshold if you accept it."
            )

    if tail.changed:
        drop_dead_nodes(final_model.graph)
        final_model = _finish_onnx(final_model)  # and their initializers

    # 5. write atomically
    class_names, colors = _labels_spec(name, num_classes)
    meta = ModelMeta(
        model_name=name,
        input_name=input_name,
        output_kind=head,  # type: ignore[arg-type]
        num_classes=num_classes,
        class_names=class_names,
        palette=colors,
        preprocess=preprocess_config.preprocess,
        opset=chosen_opset,
        dynamic_hw=fixed_hw is None,
        fixed_hw=fixed_hw,
        provenance={
            "source": str(source_path.resolve()),
            "source_sha256": src.sha256,
            "paddle_format": src.paddle_format,
            "source_output": head_info.source_output,
            "source_output_op": preprocess_config.output_op,
            "source_input_shape": [static_batch, 3, *static_hw] if static_hw else None,
            "removed_head_ops": list(head_info.removed),
            "adaptive_pools_rewritten": [list(p.output_hw) for p in pools],
            "decoder_fuse_convs_folded": decoder_folds,
            "mask_tail": tail.provenance(),
            "opset_reason": opset_reason,
            "timings_s": timings,
            "options": options,
            "versions": engine.tool_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        verification=verification,
    )
    onnx_bytes = _write_atomically(target, final_model, meta)
    return ConvertReport(
        output_dir=target,
        model_name=name,
        paddle_format=src.paddle_format,
        opset=chosen_opset,
        seconds=time.perf_counter() - started,
        onnx_bytes=onnx_bytes,
        cache_hit=False,
        verification=verification,
        meta=meta,
    )


def _write_atomically(target: Path, model: Any, meta: ModelMeta) -> int:
    """Write into a stage dir beside ``target`` and swap it into place (the old one stays whole
    until then, and is removed after)."""
    import onnx

    with staged_dir(target) as new:
        onnx.save(model, str(new / ONNX_FILE))
        write_meta(new, meta)
        for f in new.iterdir():  # mkstemp creates owner-only modes; a model dir is ordinary shared data
            f.chmod(0o644)
    return (target / ONNX_FILE).stat().st_size
