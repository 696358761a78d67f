"""fastseg.ray without a cluster: device lists and worker placement against given resources,
input listing, and the error when Ray is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fastseg.cli import main
from fastseg.errors import DeviceError, MissingDependencyError
from fastseg.ray.devices import (
    ClusterResources,
    cluster_resources_from,
    plan_workers,
    require_ray,
    split_devices,
    visible_devices_env,
)


def test_split_devices_paddlex_lists() -> None:
    assert [str(s) for s in split_devices("gpu:0,1,2")] == ["gpu:0", "gpu:1", "gpu:2"]
    assert [str(s) for s in split_devices("trt:1,3")] == ["tensorrt:1", "tensorrt:3"]
    assert [str(s) for s in split_devices("cpu")] == ["cpu"]
    assert [str(s) for s in split_devices("gpu")] == ["gpu:0"]


@pytest.mark.parametrize(
    ("device", "message"),
    [("gpu:0,0", "repeats"), ("gpu:0,,1", "empty entry"), ("gpu:0,x", "integer"), ("openvino:CPU,GPU", "only gpu, trt and npu")],
)
def test_split_devices_refuses_bad_lists(device: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        split_devices(device)


def test_gpu_list_places_one_actor_per_gpu() -> None:
    plan = plan_workers("gpu:0,1", workers=None, cluster=ClusterResources(node_cpus=(16.0,), gpus=2))
    assert (plan.workers, plan.device, plan.num_gpus, plan.num_cpus) == (2, "gpu:0", 1.0, 1.0)
    assert plan.ray_options() == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert plan.intra_op_threads == 8  # two actors on one 16-CPU node


def test_gpu_list_needs_as_many_gpus_as_listed() -> None:
    with pytest.raises(DeviceError, match=r"needs 3 GPU\(s\).*has 2"):
        plan_workers("gpu:0,1,2", workers=None, cluster=ClusterResources(node_cpus=(8.0,), gpus=2))
    with pytest.raises(DeviceError, match="names 2 devices"):
        plan_workers("gpu:0,1", workers=3, cluster=ClusterResources(node_cpus=(8.0,), gpus=4))


def test_bare_gpu_with_workers_and_npu_resources() -> None:
    plan = plan_workers("gpu", workers=3, cluster=ClusterResources(node_cpus=(4.0, 4.0), gpus=4))
    assert (plan.workers, plan.num_gpus) == (3, 1.0)
    npu = plan_workers("npu:0,1", workers=None, cluster=ClusterResources(node_cpus=(8.0,), npus=2))
    assert (npu.device, npu.resources, npu.num_gpus) == ("npu:0", {"NPU": 1.0}, 0.0)
    assert npu.ray_options()["resources"] == {"NPU": 1.0}


def test_cpu_actors_divide_the_cores() -> None:
    one_node = ClusterResources(node_cpus=(2.0,))
    assert plan_workers("cpu", workers=None, cluster=one_node).workers == 1
    two = plan_workers("cpu", workers=2, cluster=one_node)
    assert (two.workers, two.num_cpus, two.intra_op_threads, two.num_gpus) == (2, 1.0, 1, 0.0)
    three_nodes = ClusterResources(node_cpus=(8.0, 8.0, 16.0))
    assert plan_workers("cpu", workers=None, cluster=three_nodes).workers == 3  # one per node
    six = plan_workers("cpu", workers=6, cluster=three_nodes)  # 2 per node on the smallest (8 CPUs)
    assert (six.num_cpus, six.intra_op_threads) == (4.0, 4)
    many = plan_workers("cpu", workers=5, cluster=one_node)  # more actors than cores: all fit, 1 thread
    assert many.num_cpus == pytest.approx(0.4) and many.intra_op_threads == 1


def test_cluster_resources_from_ray_nodes() -> None:
    nodes = [
        {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}},
        {"Alive": True, "Resources": {"CPU": 0.0}},  # a head node kept free of work
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
        {"Alive": True, "Resources": {"CPU": 4.0, "NPU": 1.0}},
    ]
    assert cluster_resources_from(nodes) == ClusterResources(node_cpus=(8.0, 4.0), gpus=2.0, npus=1.0)


def test_visible_devices_for_a_local_ray() -> None:
    assert visible_devices_env("gpu:0,2") == {"CUDA_VISIBLE_DEVICES": "0,2"}
    assert visible_devices_env("gpu:1") == {"CUDA_VISIBLE_DEVICES": "1"}
    assert visible_devices_env("npu:0,1") == {"ASCEND_RT_VISIBLE_DEVICES": "0,1"}
    assert visible_devices_env("gpu") == {} and visible_devices_env("cpu") == {}


def test_device_list_without_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingDependencyError, match=r"\[ray\] extra"):
        require_ray("gpu:0,1")
    (tmp_path / "a.png").write_bytes(b"")
    result = CliRunner().invoke(main, ["predict", "--input", str(tmp_path), "--device", "gpu:0,1"])
    assert result.exit_code == 2
    assert "pip install 'fastseg-ort[ray]'" in result.output


def test_list_inputs_forms(tmp_path: Path) -> None:
    from fastseg.errors import InputError
    from fastseg.ray.batch import list_inputs

    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.png", "d/sub/b.jpg", "d/notes.md"):
        (tmp_path / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# frames\n{tmp_path / 'd/a.png'}\n\n{tmp_path / 'gone.png'}\ns3://bucket/x.png\n")
    assert list_inputs(tmp_path / "d") == ([str(tmp_path / "d/a.png"), str(tmp_path / "d/sub/b.jpg")], [])
    assert list_inputs(str(tmp_path / "d/**/*.jpg"))[0] == [str(tmp_path / "d/sub/b.jpg")]
    assert list_inputs(listing) == (
        [str(tmp_path / "d/a.png"), "s3://bucket/x.png"], [(str(tmp_path / "gone.png"), "no such file")]
    )
    with pytest.raises(InputError, match="does not exist"):
        list_inputs(tmp_path / "nope")
    with pytest.raises(InputError, match="not http"):
        list_inputs(["https://example.com/a.png"])
    with pytest.raises(InputError, match="matches no files"):
        list_inputs(str(tmp_path / "*.webp"))


def test_worker_error_rebuilds_the_fastseg_error_from_rays_report() -> None:
    from fastseg.ray.cluster import worker_error

    report = RuntimeError(
        "The actor died because of an error raised in its creation task ...\nTraceback (most recent call last):\n"
        '  File "runtime.py", line 205, in _unavailable\n'
        "fastseg.errors.DeviceError: Device 'openvino:NPU' needs OpenVINOExecutionProvider. Install it.\n"
    )
    err = worker_error(report)
    assert isinstance(err, DeviceError)
    assert str(err) == "Device 'openvino:NPU' needs OpenVINOExecutionProvider. Install it. (in a Ray worker)"
    assert worker_error(RuntimeError("ray.exceptions.OutOfMemoryError: node died")) is None
    assert worker_error(RuntimeError("fastseg.errors.NoSuchError: x")) is None


_WAITER = """
import signal, threading, time
from fastseg.ray.commands import wait_until_stopped
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job of a script inherits it
before_term = signal.getsignal(signal.SIGTERM)

def announce():  # once wait_until_stopped's handlers are in (it installs SIGTERM's last)
    while signal.getsignal(signal.SIGTERM) == before_term:
        time.sleep(0.01)
    print("waiting", flush=True)

threading.Thread(target=announce, daemon=True).start()
wait_until_stopped()  # returns instead of killing the process
assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN and signal.getsignal(signal.SIGTERM) == before_term
print("returned", flush=True)
"""


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_serve_ray_wait_returns_on_sigterm_and_ctrl_c_and_restores_handlers(signame: str) -> None:
    """serve --ray blocks in wait_until_stopped: SIGTERM (container stop) and Ctrl-C must both
    return to the shutdown path, even when SIGINT was inherited ignored, and the handlers come
    back as they were. In a child process: a signal sent to the test process itself killed it
    with SIGSEGV on an AMX Xeon once an earlier test had run OpenVINO bf16 there (pytest only;
    fastseg predict and serve with a bf16 model exit cleanly on SIGINT and SIGTERM)."""
    import signal
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", _WAITER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "waiting"
        child.send_signal(getattr(signal, signame))
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert out.strip() == "returned"


def test_serve_ray_log_level_reaches_the_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    """--log-level goes to serve.run's application config (the replicas), not only to serve.start's
    (controller and proxy): replicas otherwise log every request at INFO."""
    pytest.importorskip("ray.serve")
    import contextlib

    from ray import serve

    import fastseg.ray.cluster as cluster
    import fastseg.ray.commands as commands
    import fastseg.ray.serve as ray_serve
    from fastseg.serving.config import ServingConfig

    calls: dict[str, dict[str, object]] = {}
    monkeypatch.setattr(cluster, "ray_session", lambda **kw: contextlib.nullcontext(False))
    monkeypatch.setattr(ray_serve, "build_serve_app", lambda *a, **kw: "app")
    monkeypatch.setattr(serve, "start", lambda **kw: calls.update(start=kw))
    monkeypatch.setattr(serve, "run", lambda app, **kw: calls.update(run=kw))
    monkeypatch.setattr(serve, "shutdown", lambda: calls.update(shutdown={}))
    monkeypatch.setattr(commands, "wait_until_stopped", lambda: None)
    commands.run_serve(
        model="PP-LiteSeg-T", device="cpu", host="127.0.0.1", port=8080, config=ServingConfig(), replicas=1,
        max_ongoing_requests=None, address=None, threads=None, log_level="warning",
    )
    assert calls["start"]["logging_config"] == {"log_level": "WARNING"}
    assert calls["run"]["logging_config"] == {"log_level": "WARNING"}
    assert "shutdown" in calls
