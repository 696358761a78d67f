"""What batch and serve share on Ray: connecting (or starting a local Ray), shipping the model
directory to workers through Ray's object store, and building one ``Segmenter`` per worker.

The model is resolved once on the driver (a zoo name is converted there, never on workers);
its files travel as one object, so workers need neither the model cache nor a shared file
system. Each worker writes them to a private directory under fastseg's temp root
(``fastseg.tempdirs``) and loads them from there; a killed worker's copy is swept by the next.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastseg import errors
from fastseg.errors import FastSegError, ModelDirError
from fastseg.model_dir import read_meta
from fastseg.ray.devices import ClusterResources, cluster_resources_from, require_ray, visible_devices_env
from fastseg.engines.ort import RuntimeOptions
from fastseg.reference import Weights
from fastseg.segmenter import Segmenter
from fastseg.model_resolution import resolve_model_dir
from fastseg.tempdirs import new_scratch_dir

log = logging.getLogger(__name__)

MAX_MODEL_BYTES = 2 * 1024**3  # the object store takes more, but a model this big is a mistake
_REFUSING_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, a connect is refused at once
# Ray reports a worker's exception as text ending in its traceback's last line.
_FASTSEG_ERROR_LINE = re.compile(r"^fastseg\.errors\.(\w+): (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class ModelFiles:
    """A converted model directory as bytes: relative path -> content (what workers receive)."""

    name: str  # for display: the model's name, with its untrained-weights note and int8 gate if any
    files: Mapping[str, bytes]

    @classmethod
    def pack(cls, model: str | Path, *, home: Path | None = None, weights: Weights = "official") -> ModelFiles:
        """Resolve ``model`` (zoo name or directory; converts, or builds ``weights="reference"``, on
        demand) and read its files.

        Raises:
            UnknownModelError, ModelDirError, MissingDependencyError, InputError: as ``Segmenter``.
        """
        model_dir = resolve_model_dir(model, home=home, weights=weights)
        meta = read_meta(model_dir)
        files = {
            p.relative_to(model_dir).as_posix(): p.read_bytes()
            for p in sorted(model_dir.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }
        size = sum(len(b) for b in files.values())
        if size > MAX_MODEL_BYTES:
            raise ModelDirError(f"Model directory {model_dir} holds {size / 1e9:.1f} GB; ship at most 2 GB to workers.")
        from fastseg.reference import weights_note

        note = weights_note(meta)
        precision = meta.precision_label
        shown = meta.model_name + (f" [{note}]" if note else "") + (f" ({precision})" if precision != "fp32" else "")
        return cls(name=shown, files=files)

    def unpack(self, target: Path) -> Path:
        """Write the files under ``target`` (a fresh directory) and return it."""
        for rel, data in self.files.items():
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return target


class WorkerSegmenter:
    """One worker's ``Segmenter`` over its own unpacked copy of the model (removed on close)."""

    def __init__(
        self, model: ModelFiles, *, device: str, threads: int | None, segmenter_kwargs: Mapping[str, Any]
    ) -> None:
        # <temp root>/model-<pid>-<hex>: removed on close; a killed actor's copy is swept by the next
        self._tmp = new_scratch_dir("model")
        kwargs = dict(segmenter_kwargs)
        options = kwargs.pop("options", None) or RuntimeOptions()
        if threads is not None and options.intra_op_threads is None:
            options = dataclasses.replace(options, intra_op_threads=threads)
        try:
            self.segmenter = Segmenter(model.unpack(self._tmp.path), device=device, options=options, **kwargs)
        except BaseException:
            self._tmp.close()
            raise

    def close(self) -> None:
        self.segmenter.close()
        self._tmp.close()


def fetch_model(model: ModelFiles | Any) -> ModelFiles:
    """The ``ModelFiles`` itself, or the one behind a Ray ``ObjectRef`` (inside a worker)."""
    if isinstance(model, ModelFiles):
        return model
    import ray

    fetched = ray.get(model)
    if not isinstance(fetched, ModelFiles):
        raise TypeError(f"expected ModelFiles from the object store, got {type(fetched).__name__}")
    return fetched


def worker_error(report: BaseException | str) -> FastSegError | None:
    """The fastseg error that made a Ray worker fail (e.g. a device it cannot use), rebuilt from
    Ray's report (an exception or its text) as the same class with its one-line message; None
    when the failure was something else."""
    found = _FASTSEG_ERROR_LINE.findall(str(report))
    if not found:
        return None
    name, message = found[-1]
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, FastSegError):
        return cls(f"{message} (in a Ray worker)")
    return None


def cluster_resources() -> ClusterResources:
    """The running Ray cluster's alive nodes' resources."""
    import ray

    return cluster_resources_from(ray.nodes())  # type: ignore[no-untyped-call]


def local_cluster_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment that keeps a local Ray cluster (one fastseg starts) on loopback.

    - ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray finds a node's address by connecting a UDP
      socket to 8.8.8.8:53 and then serves on that address; with this (despite its name, Ray's
      switch for "single-node only"), the node is 127.0.0.1 and nothing is probed. It is read
      when ``ray`` is imported, so ``ray_session`` sets it before importing ray.
    - ``http_proxy``/``https_proxy`` to a closed loopback port, with ``no_proxy`` for loopback:
      Ray's dashboard head probes cloud metadata (169.254.169.254, metadata.google.internal)
      when it starts, even with usage statistics off (ray 2.60); through this proxy every such
      HTTP request ends, refused, on loopback. Ray's own gRPC ignores proxies.

    A variable the user set is kept, and any proxy variable of theirs leaves the proxies alone.
    """
    env = {} if "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" in environ else {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    names = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    if not any(name in environ or name.upper() in environ for name in names):
        env.update({"http_proxy": _REFUSING_PROXY, "https_proxy": _REFUSING_PROXY, "no_proxy": "localhost,127.0.0.1,::1"})
    return env


@contextlib.contextmanager
def ray_session(*, address: str | None, device: str, num_cpus: int | None = None) -> Iterator[bool]:
    """Use the Ray this process is connected to, or connect to ``address``, or start a local Ray
    (limited to the devices listed in ``device``, and to ``num_cpus`` CPUs when given).

    Yields True when this call connected or started Ray (it then shuts it down on exit).

    Raises:
        MissingDependencyError: Ray is not installed.
    """
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    env = {} if address else {**visible_devices_env(device), **local_cluster_env(os.environ)}
    if address is None and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    saved = {k: os.environ.get(k) for k in env}
    # Read by the local cluster's processes when they start (devices, address, proxies) and by
    # this process's ``import ray`` (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER): set first, restored below.
    os.environ.update(env)
    try:
        require_ray("Running on Ray")
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(address=address, **kwargs)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if not started:
        yield False
        return
    try:
        yield True
    finally:
        ray.shutdown()
