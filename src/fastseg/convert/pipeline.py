"""``convert_model``: Paddle inference model -> verified fastseg model directory.

A ``ConvertPlan`` holds the choices; ``run_plan`` runs one function per step:
``read_program`` (legacy ``.pdmodel`` -> PIR in the child), ``export_onnx`` (head stripped and
adaptive pool inputs static by JSON edits, paddle2onnx in a child process, exact dynamic adaptive
pools, the requested head, MaskFormer's tail channels-last, onnx checker + shape inference),
``verify_export`` (against Paddle; ``verify.require_agreement`` refuses below the threshold),
shape-only control flow folded on frozen-shape graphs (``static_fold``), ``model_meta``, then the
files, staged and swapped in (``target.write_atomically``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastseg.convert import child, pir_program
from fastseg.convert.scratch import sigterm_exits_cleanly
from fastseg.convert.sources import DeployConfig, PaddleSource, open_source, palette, read_deploy_config
from fastseg.convert.target import cached_meta, refuse_foreign_target, resolve_output, write_atomically
from fastseg.errors import ConversionError, ModelDirError
from fastseg.model_dir import ONNX_FILE, OUTPUT_KINDS, ModelMeta
from fastseg.reference import REFERENCE_WEIGHTS
from fastseg.tempdirs import new_scratch_dir
from fastseg.zoo import load_zoo

if TYPE_CHECKING:
    from fastseg.convert.mask_tail import TailRewrite
    from fastseg.convert.static_fold import StaticFold

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


@dataclass(frozen=True)
class ConvertPlan:
    """The choices of one conversion, fixed before any work (``convert_model`` checks them).

    ``options`` are what a cached output must share (recorded in its provenance as asked, so
    ``for_program`` narrowing ``fixed_hw`` to a fixed-shape export does not change them).
    """

    source: Path
    src: PaddleSource
    name: str
    target: Path
    deploy: DeployConfig
    options: dict[str, Any]
    head: str = "labels"
    opset: int | None = None
    verify: bool = True
    images_dir: Path | None = None
    verify_sizes: tuple[tuple[int, int], ...] = DEFAULT_VERIFY_SIZES
    threshold: float = DEFAULT_THRESHOLD
    fixed_hw: tuple[int, int] | None = None

    def for_program(self, static_hw: tuple[int, int] | None) -> ConvertPlan:
        """The plan for a program whose input is ``static_hw``: a fixed-shape export (PaddleX's
        MaskFormer: [1, 3, 512, 512]) runs, and is verified, at that size only."""
        sizes = (static_hw,) if static_hw is not None and self.images_dir is None else self.verify_sizes
        return replace(self, fixed_hw=pir_program.check_fixed_hw(static_hw, self.fixed_hw), verify_sizes=sizes)


@dataclass(frozen=True)
class Exported:
    """The ONNX graphs paddle2onnx made from the program, rewritten, and what was learnt on the way."""

    logits_json: Path
    params: Path
    logits_model: Any
    final_model: Any
    input_name: str
    num_classes: int
    opset: int
    opset_reason: str
    head_info: pir_program.HeadInfo
    pools: list[pir_program.AdaptivePool]
    decoder_folds: int
    static_batch: int | None
    static_hw: tuple[int, int] | None
    tail: TailRewrite  # MaskFormer's channels-last tail (convert/mask_tail.py), or unchanged
    static_fold: StaticFold | None = None  # shape-only control flow folded (convert/static_fold.py), after verify


class _Laps:
    """Seconds per phase since the previous one (the provenance's ``timings_s``)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] = round(now - self._last, 2)
        self._last = now


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
        force: convert even when ``output`` already holds this source converted the same way
            (and, for ``images_dir`` or other ``verify_sizes``, verified on those inputs).
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
    child.require_convert_deps()

    work_dir = new_scratch_dir("convert")  # sweeps what conversions killed with -9 left
    scratch = work_dir.path
    try:
        src = open_source(source, scratch)
        deploy = read_deploy_config(src.config_file)
        name = deploy.model_name or model_name or src.default_name
        target = resolve_output(output, name)
        refuse_foreign_target(target)
        plan = ConvertPlan(
            source=source, src=src, name=name, target=target, deploy=deploy,
            options={"head": head, "opset": opset, "fixed_hw": list(fixed_hw) if fixed_hw else None, "fold_decoder": True,
                     "mask_tail": True, "static_fold": True},
            head=head, opset=opset, verify=verify, images_dir=images_dir,
            verify_sizes=(fixed_hw,) if fixed_hw else tuple(verify_sizes), threshold=threshold, fixed_hw=fixed_hw,
        )
        if not force:
            from fastseg.convert.verify import verify_input_names

            asked = images_dir is not None or (tuple(verify_sizes) != DEFAULT_VERIFY_SIZES and fixed_hw is None)
            inputs = verify_input_names(images_dir, plan.verify_sizes) if verify and asked else None
            meta = cached_meta(target, src.sha256, plan.options, verify=verify, threshold=threshold, inputs=inputs)
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
        return run_plan(plan, scratch, started=started)
    finally:
        work_dir.close()


def run_plan(plan: ConvertPlan, scratch: Path, *, started: float) -> ConvertReport:
    """The steps of one conversion: program -> ONNX -> verification -> files."""
    work = scratch / "work"
    work.mkdir()
    laps = _Laps()
    program, params = read_program(plan, work)
    laps("to_pir")
    static_batch, static_hw = pir_program.static_input_shape(program)
    plan = plan.for_program(static_hw)
    exported = export_onnx(plan, program, params, work, laps=laps)
    laps("onnx_rewrite_check")
    verification: dict[str, Any] = {"skipped": True}
    if plan.verify:
        from fastseg.convert.verify import require_agreement

        verification = verify_export(plan, exported, work)
        laps("verify")
        require_agreement(verification, plan.threshold)
    from fastseg.convert.decoder_fold import drop_dead_nodes
    from fastseg.convert.static_fold import fold_static_control_flow

    if exported.tail.changed:  # the old tail's nodes stayed for the verification to read its scores
        drop_dead_nodes(exported.final_model.graph)
        exported = replace(exported, final_model=_finish_onnx(exported.final_model))
    final_model, static_fold = fold_static_control_flow(exported.final_model, work / "static_fold")
    exported = replace(exported, final_model=final_model, static_fold=static_fold)
    meta = model_meta(plan, exported, verification, laps.timings)
    onnx_bytes = write_atomically(plan.target, exported.final_model, meta)
    return ConvertReport(
        output_dir=plan.target,
        model_name=plan.name,
        paddle_format=plan.src.paddle_format,
        opset=exported.opset,
        seconds=time.perf_counter() - started,
        onnx_bytes=onnx_bytes,
        cache_hit=False,
        verification=verification,
        meta=meta,
    )


def read_program(plan: ConvertPlan, work: Path) -> tuple[dict[str, Any], Path]:
    """Step 1: the PIR program (a legacy ProgramDesc is translated in the child) and its params file."""
    src = plan.src
    if src.paddle_format == "legacy":
        child.run_paddle_worker(
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
    try:
        program: dict[str, Any] = json.loads(pir_json.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{pir_json.name} is not a readable PIR JSON program ({exc}).") from exc
    return program, params


def export_onnx(plan: ConvertPlan, program: dict[str, Any], params: Path, work: Path, *, laps: _Laps) -> Exported:
    """Steps 2-3: JSON edits (head stripped, adaptive pool inputs static), paddle2onnx in a child
    process, exact dynamic adaptive pools, decoder folds, the requested head, checker + shapes."""
    import onnx

    from fastseg.convert.adaptive_pool import replace_adaptive_pools
    from fastseg.convert.decoder_fold import fold_decoder_fuse
    from fastseg.convert.heads import attach_head
    from fastseg.convert.mask_tail import rewrite_mask_tail

    static_batch, static_hw = pir_program.static_input_shape(program)
    pools = pir_program.adaptive_pools(program)
    logits_program, head_info = pir_program.strip_program_head(program)
    opset, opset_reason = choose_opset(program) if plan.opset is None else (plan.opset, "asked for")
    logits_json = work / "logits.json"
    logits_json.write_text(json.dumps(logits_program), encoding="utf-8")
    export_json = work / "export.json"
    export_json.write_text(
        json.dumps(pir_program.make_adaptive_inputs_static(logits_program) if pools else logits_program),
        encoding="utf-8",
    )
    raw_onnx = work / "raw.onnx"
    child.run_paddle_worker(
        "export", work, what="paddle2onnx",
        model_file=str(export_json), params_file=str(params), save_file=str(raw_onnx), opset=opset,
    )
    laps("paddle2onnx")
    logits_model, decoder_folds = fold_decoder_fuse(replace_adaptive_pools(onnx.load(str(raw_onnx)), pools))
    input_name = logits_model.graph.input[0].name
    if plan.fixed_hw is not None:
        dims = logits_model.graph.input[0].type.tensor_type.shape.dim
        for axis, value in ((2, plan.fixed_hw[0]), (3, plan.fixed_hw[1])):
            dims[axis].Clear()
            dims[axis].dim_value = value
    num_classes = _num_classes(logits_model, input_name, plan.fixed_hw or (64, 64))
    # checker + shape inference once, on the final graph (logits graph + 1-2 head nodes)
    final_model, tail = rewrite_mask_tail(attach_head(logits_model, plan.head, opset=opset), labels=plan.head == "labels")
    final_model = _finish_onnx(final_model)
    return Exported(
        logits_json=logits_json, params=params, logits_model=logits_model, final_model=final_model,
        input_name=input_name, num_classes=num_classes, opset=opset, opset_reason=opset_reason,
        head_info=head_info, pools=pools, decoder_folds=decoder_folds, static_batch=static_batch, static_hw=static_hw,
        tail=tail,
    )


def verify_export(plan: ConvertPlan, exported: Exported, work: Path) -> dict[str, Any]:
    """Step 4: the figures of the ONNX model against Paddle Inference (``convert.verify``)."""
    from fastseg.convert.verify import verify_against_paddle

    verification = verify_against_paddle(
        work=work,
        src=plan.src,
        logits_json=exported.logits_json,
        params=exported.params,
        logits_model=exported.logits_model,
        final_model=exported.final_model,
        preprocess=plan.deploy.preprocess,
        images_dir=plan.images_dir,
        verify_sizes=list(plan.verify_sizes),
        fixed_hw=plan.fixed_hw,
        batch2=exported.static_batch is None,
    )
    verification["threshold"] = plan.threshold
    return verification


def model_meta(plan: ConvertPlan, exported: Exported, verification: dict[str, Any], timings: dict[str, float]) -> ModelMeta:
    """Step 5: ``fastseg.json``: labels, pre-processing, shapes, provenance and verification."""
    class_names, colors = _labels_spec(plan.name, exported.num_classes)
    static_hw = exported.static_hw
    return ModelMeta(
        model_name=plan.name,
        input_name=exported.input_name,
        output_kind=plan.head,  # type: ignore[arg-type]
        num_classes=exported.num_classes,
        class_names=class_names,
        palette=colors,
        preprocess=plan.deploy.preprocess,
        opset=exported.opset,
        dynamic_hw=plan.fixed_hw is None,
        fixed_hw=plan.fixed_hw,
        provenance={
            "source": str(plan.source.resolve()),
            "source_sha256": plan.src.sha256,
            "paddle_format": plan.src.paddle_format,
            "source_output": exported.head_info.source_output,
            "source_output_op": plan.deploy.output_op,
            "source_input_shape": [exported.static_batch, 3, *static_hw] if static_hw else None,
            "removed_head_ops": list(exported.head_info.removed),
            "adaptive_pools_rewritten": [list(p.output_hw) for p in exported.pools],
            "decoder_fuse_convs_folded": exported.decoder_folds,
            "mask_tail": exported.tail.provenance(),
            "static_fold": exported.static_fold.provenance() if exported.static_fold else None,
            "opset_reason": exported.opset_reason,
            "timings_s": timings,
            "options": plan.options,
            "versions": child.tool_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **({"weights": REFERENCE_WEIGHTS} if plan.src.reference else {}),
        },
        verification=verification,
    )
