"""Device strings -> ``DeviceSpec``, and the physical cores sessions size their threads by.

Device strings are the ones PaddleX users type (``cpu``, ``gpu``, ``gpu:1``, ``npu:0``) plus
explicit ``openvino[:CPU|GPU|NPU]`` and ``trt[:N]``/``tensorrt[:N]``. ``parse_device`` is a pure
function; every engine (``fastseg.engines.ort``, ``fastseg.engines``) starts from its ``DeviceSpec``.
Imports nothing from fastseg but its errors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastseg.errors import DeviceError

DeviceKind = Literal["cpu", "gpu", "npu", "openvino", "tensorrt"]

ACCEPTED_FORMS = (
    "'cpu', 'gpu', 'gpu:N' (= 'cuda:N'), 'npu', 'npu:N', 'trt', 'trt:N' (= 'tensorrt:N'), "
    "'openvino', 'openvino:CPU', 'openvino:GPU', 'openvino:NPU' (N = device index >= 0)"
)
_DEVICE_RE = re.compile(r"^(?P<kind>[a-z]+)(?::(?P<arg>[^:]+))?$")
_OPENVINO_TARGETS = ("CPU", "GPU", "NPU")


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device string: what kind of accelerator, which index, which OpenVINO target."""

    kind: DeviceKind
    index: int = 0
    openvino_target: str = "CPU"

    @property
    def on_cpu(self) -> bool:
        """Whether the model runs on this machine's CPU (``cpu``, or OpenVINO's CPU target)."""
        return self.kind == "cpu" or (self.kind == "openvino" and self.openvino_target == "CPU")

    def __str__(self) -> str:
        if self.kind == "cpu":
            return "cpu"
        if self.kind == "openvino":
            return f"openvino:{self.openvino_target}"
        return f"{self.kind}:{self.index}"


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once), at least 1.

    Uses psutil when installed, else the Linux CPU topology of the affinity set, else
    ``os.cpu_count()``.
    """
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        allowed = list(range(os.cpu_count() or 1))
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        if physical:
            return max(1, min(int(physical), len(allowed)))
    except ImportError:
        pass
    cores: set[tuple[str, str]] = set()
    for cpu in allowed:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                ((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip())
            )
        except OSError:
            return max(1, len(allowed))
    return max(1, len(cores))


def parse_device(device: str) -> DeviceSpec:
    """Parse a PaddleX-style device string.

    Raises:
        DeviceError: the string is not one of the accepted forms (listed in the message).
    """
    if not isinstance(device, str):
        raise DeviceError(f"Device must be a string, got {type(device).__name__}. Accepted: {ACCEPTED_FORMS}.")
    text = device.strip()
    m = _DEVICE_RE.match(text.lower())
    if not m:
        raise DeviceError(f"Cannot parse device {device!r}. Accepted: {ACCEPTED_FORMS}.")
    kind, arg = m.group("kind"), m.group("arg")
    if kind == "cuda":
        kind = "gpu"
    if kind == "trt":
        kind = "tensorrt"
    if kind == "cpu":
        if arg not in (None, "0"):
            raise DeviceError(f"Cannot parse device {device!r}: 'cpu' takes no index. Accepted: {ACCEPTED_FORMS}.")
        return DeviceSpec("cpu")
    if kind == "openvino":
        target = (arg or "CPU").upper()
        if target not in _OPENVINO_TARGETS:
            raise DeviceError(
                f"Unknown OpenVINO target in {device!r}; use one of {', '.join(_OPENVINO_TARGETS)}. "
                f"Accepted: {ACCEPTED_FORMS}."
            )
        return DeviceSpec("openvino", openvino_target=target)
    if kind in ("gpu", "npu", "tensorrt"):
        if arg is None:
            return DeviceSpec(kind)  # type: ignore[arg-type]
        if not arg.isdigit():
            raise DeviceError(
                f"Cannot parse device {device!r}: the index must be an integer >= 0. Accepted: {ACCEPTED_FORMS}."
            )
        return DeviceSpec(kind, index=int(arg))  # type: ignore[arg-type]
    raise DeviceError(f"Unknown device kind {kind!r} in {device!r}. Accepted: {ACCEPTED_FORMS}.")
