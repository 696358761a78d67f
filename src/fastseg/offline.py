"""No connection the user did not ask for: the environment switches that keep the libraries
fastseg runs on from phoning home. See docs/hardening.md.

Why here, and why environment variables. ONNX Runtime's telemetry (a DNS lookup about 10 s
after a session loads, then every 5-9 s) has one off switch, ``ORT_DISABLE_TELEMETRY=1``, and
ONNX Runtime reads it when ``onnxruntime`` is *imported*: set after the import, even before the
first session, it changes nothing (measured: 14 DNS connects in 25 s either way; 0 when set
before the import). Ray's usage statistics read ``RAY_USAGE_STATS_ENABLED`` when a cluster
starts. Both must therefore be in the environment before either library is imported, in every
process: the package's ``__init__`` calls ``keep_offline`` first, and Python runs it before any
``fastseg.*`` module, so it precedes every onnxruntime/ray import that fastseg makes, in the
CLI, in library use, in child processes (bench and convert workers run ``python -m fastseg...``)
and in Ray workers (which import ``fastseg`` to unpickle its classes, and also inherit the
variables from the driver through the raylet). Environment variables are also the only way
the setting reaches processes fastseg starts without a line of code in each of them.

A value the user set is kept (``setdefault``): ``ORT_DISABLE_TELEMETRY=0`` turns ONNX
Runtime's telemetry back on. A program that imports onnxruntime *before* fastseg has already
fixed ONNX Runtime's choice; such a program must set the variable itself.

OpenVINO has no such variable, and ``import openvino`` itself sends an event to Google Analytics
(its package imports ``openvino.tools.ovc``, whose telemetry counts the import, from a forked
process, and writes ``~/intel/openvino_ga_cid``): ``import_openvino_quietly`` imports it the one way its
telemetry declines without asking, ``CI=true``, for the import only. The local Ray cluster's own probes (node address, cloud metadata) are
handled where that cluster starts: ``fastseg.ray.cluster.local_cluster_env``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from types import ModuleType

OFFLINE_ENV: dict[str, str] = {
    "ORT_DISABLE_TELEMETRY": "1",  # onnxruntime: no telemetry host lookups
    "RAY_USAGE_STATS_ENABLED": "0",  # Ray: no usage reports to usage-stats.ray.io
}


def keep_offline(environ: MutableMapping[str, str]) -> None:
    """Add ``OFFLINE_ENV``'s switches to ``environ`` (``os.environ``), keeping any the user set."""
    for key, value in OFFLINE_ENV.items():
        environ.setdefault(key, value)


def import_openvino_quietly() -> ModuleType:
    """``import openvino`` without its import-time telemetry event.

    openvino_telemetry declines (no event, no files written) when ``CI`` is "true"; it is set
    for the import only, and not at all when the user set ``CI`` or made an explicit choice
    with OpenVINO's ``opt_in_out`` tool (``~/intel/openvino_telemetry`` exists).

    Raises:
        ImportError: openvino is not installed.
    """
    try:
        chose = (Path.home() / "intel" / "openvino_telemetry").exists()
    except RuntimeError:  # no home directory: nothing to respect
        chose = False
    quiet = "openvino" not in sys.modules and "CI" not in os.environ and not chose
    if quiet:
        os.environ["CI"] = "true"
    try:
        import openvino

        module: ModuleType = openvino
        return module
    finally:
        if quiet:
            os.environ.pop("CI", None)
