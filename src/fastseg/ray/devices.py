"""Several devices on Ray: a PaddleX device list (``gpu:0,1,2``) -> how many actors or replicas,
what each one reserves, and the device and thread count each one's ``Segmenter`` gets.

Pure functions over a given ``ClusterResources`` (tested without Ray); ``cluster_resources``
reads them from a running Ray. Imports nothing from Ray at module level, so a multi-device
string without Ray installed is a clear error naming the ``[ray]`` extra (``require_ray``).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastseg.errors import DeviceError, MissingDependencyError
from fastseg.engines.device import DeviceSpec, parse_device

RAY_EXTRA_HINT = "pip install 'fastseg-ort[ray]'"
# Ray resource names per device kind: CUDA devices (gpu, TensorRT) are Ray's GPUs; Ascend NPUs
# are Ray's "NPU" custom resource (set by Ray from ASCEND_RT_VISIBLE_DEVICES).
_RAY_GPU_KINDS = frozenset({"gpu", "tensorrt"})
_RAY_NPU_KIND = "npu"


@dataclass(frozen=True)
class ClusterResources:
    """What a Ray cluster offers: CPUs of each alive node with CPUs, and accelerator totals."""

    node_cpus: tuple[float, ...]
    gpus: float = 0.0
    npus: float = 0.0


@dataclass(frozen=True)
class WorkerPlan:
    """How the work is placed: ``workers`` actors (batch) or replicas (serve), each reserving
    ``num_cpus``/``num_gpus``/``resources`` and running ``Segmenter(device=device)`` with
    ``intra_op_threads`` ONNX Runtime threads. Ray gives each accelerator actor one device and
    makes it the only visible one, so ``device`` is index 0 (``gpu:0``) whatever was listed.
    """

    workers: int
    device: str
    num_cpus: float
    num_gpus: float = 0.0
    resources: Mapping[str, float] = field(default_factory=dict)
    intra_op_threads: int | None = None

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments for ``map_batches``/``ray_actor_options``."""
        opts: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            opts["num_gpus"] = self.num_gpus
        if self.resources:
            opts["resources"] = dict(self.resources)
        return opts


def split_devices(device: str) -> list[DeviceSpec]:
    """``gpu:0,1,2`` -> three ``DeviceSpec``s (PaddleX's multi-device form); one string -> one.

    Raises:
        DeviceError: a part that does not parse, kinds mixed, an index repeated, or a list of a
            kind that has no several devices (cpu, openvino).
    """
    text = device.strip()
    kind, sep, indices = text.partition(":")
    if not sep or "," not in indices:
        return [parse_device(text)]
    parts = [p.strip() for p in indices.split(",")]
    if any(not p for p in parts):
        raise DeviceError(f"Device list {device!r} has an empty entry: write e.g. 'gpu:0,1,2'.")
    specs = [parse_device(f"{kind}:{p}") for p in parts]
    if specs[0].kind not in (*_RAY_GPU_KINDS, _RAY_NPU_KIND):
        raise DeviceError(f"Device list {device!r}: only gpu, trt and npu take several indices.")
    seen = [s.index for s in specs]
    if len(set(seen)) != len(seen):
        raise DeviceError(f"Device list {device!r} repeats an index; name each device once.")
    return specs


def is_multi_device(device: str) -> bool:
    """True for a device list such as ``gpu:0,1`` (needs Ray), without validating it."""
    return "," in device


def require_ray(what: str) -> None:
    """Raise a clear error when Ray is not installed.

    Raises:
        MissingDependencyError: naming the ``[ray]`` extra.
    """
    # Found, not imported: a local cluster's settings must be in the environment before
    # ``import ray`` (fastseg.ray.cluster.local_cluster_env).
    if importlib.util.find_spec("ray") is None:
        raise MissingDependencyError(f"{what} needs Ray (the [ray] extra): {RAY_EXTRA_HINT}")


def plan_workers(device: str, *, workers: int | None, cluster: ClusterResources) -> WorkerPlan:
    """Place ``workers`` actors for ``device`` on ``cluster``.

    Accelerators: one actor per listed device (``gpu:0,1,2`` -> 3), or ``workers`` of them for
    ``gpu``/``gpu:N``; each reserves one device. CPU (and OpenVINO): ``workers`` actors (default
    one per node), each reserving an equal share of a node's CPUs and running that many
    ONNX Runtime threads, so the actors on one node divide its cores instead of fighting for them.

    Raises:
        DeviceError: a bad device string, a worker count that contradicts the device list, or
            more accelerators asked for than the cluster has (Ray would wait for them forever).
    """
    if workers is not None and workers < 1:
        raise DeviceError(f"workers must be >= 1, got {workers}.")
    specs = split_devices(device)
    nodes = [c for c in cluster.node_cpus if c > 0] or [1.0]
    kind = specs[0].kind
    listed = len(specs) > 1
    if listed and workers is not None and workers != len(specs):
        raise DeviceError(
            f"--device {device!r} names {len(specs)} devices (one worker each) but --workers is {workers}; "
            "drop --workers or list as many devices."
        )
    count = len(specs) if listed else workers or (1 if kind in (*_RAY_GPU_KINDS, _RAY_NPU_KIND) else len(nodes))
    per_node = math.ceil(count / len(nodes))
    share = min(nodes) / per_node  # CPUs of the smallest node, divided among its actors
    threads = max(1, math.floor(share))
    if kind in _RAY_GPU_KINDS or kind == _RAY_NPU_KIND:
        have, what = (cluster.gpus, "GPU") if kind in _RAY_GPU_KINDS else (cluster.npus, "NPU")
        if count > have:
            raise DeviceError(
                f"--device {device!r} needs {count} {what}(s), one per worker; the Ray cluster has {have:g}."
            )
        return WorkerPlan(
            workers=count,
            device=str(DeviceSpec(kind, index=0)),
            num_cpus=min(1.0, share),
            num_gpus=1.0 if kind in _RAY_GPU_KINDS else 0.0,
            resources={} if kind in _RAY_GPU_KINDS else {"NPU": 1.0},
            intra_op_threads=threads,
        )
    return WorkerPlan(
        workers=count, device=str(specs[0]), num_cpus=share, intra_op_threads=threads
    )


def cluster_resources_from(nodes: Sequence[Mapping[str, Any]]) -> ClusterResources:
    """``ray.nodes()`` entries -> ``ClusterResources`` (alive nodes only)."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", n.get("alive", False))]
    return ClusterResources(
        node_cpus=tuple(float(r.get("CPU", 0.0)) for r in alive if r.get("CPU", 0.0) > 0),
        gpus=sum(float(r.get("GPU", 0.0)) for r in alive),
        npus=sum(float(r.get("NPU", 0.0)) for r in alive),
    )


def visible_devices_env(device: str) -> dict[str, str]:
    """Environment that limits a Ray started here to the devices listed (``gpu:0,2`` ->
    ``CUDA_VISIBLE_DEVICES=0,2``); empty for CPU or a bare ``gpu`` (no limit)."""
    specs = split_devices(device)
    kind = specs[0].kind
    if kind not in (*_RAY_GPU_KINDS, _RAY_NPU_KIND) or (len(specs) == 1 and device.find(":") < 0):
        return {}
    var = "ASCEND_RT_VISIBLE_DEVICES" if kind == _RAY_NPU_KIND else "CUDA_VISIBLE_DEVICES"
    return {var: ",".join(str(s.index) for s in specs)}
