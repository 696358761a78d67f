"""``fastseg.engines.gpu_libs.prepare_cuda``: pip-installed CUDA is preloaded, and a missing library
becomes one line naming it and the install command. Runs on a CPU machine with a fake
onnxruntime; the last test uses a real onnxruntime-gpu from a separate venv when one is given."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from fastseg.errors import DeviceError
from fastseg.engines.gpu_libs import CUDA_EP, TRT_EP, missing_library, prepare_cuda

LOADER_MISSING = "libcublasLt.so.13: cannot open shared object file: No such file or directory"
EXPECTED = (
    "CUDA provider cannot start: libcublasLt.so.13 is missing. Fix: pip install 'onnxruntime-gpu[cuda,cudnn]' "
    "(CUDA and cuDNN from pip), or install them system-wide."
)


def fake_ort(tmp_path: Path, *, with_preload: bool = True, libs: tuple[str, ...] = (
    "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so", "libonnxruntime_providers_tensorrt.so",
)) -> tuple[types.ModuleType, list[str]]:
    """An ``onnxruntime`` stand-in whose capi/ holds (empty) provider libraries; records preloads."""
    pkg = tmp_path / "onnxruntime"
    (pkg / "capi").mkdir(parents=True)
    for lib in libs:
        (pkg / "capi" / lib).write_bytes(b"")
    module = types.ModuleType("onnxruntime")
    module.__file__ = str(pkg / "__init__.py")
    calls: list[str] = []
    if with_preload:
        def preload_dlls() -> None:
            print("Failed to load libcublasLt.so.13: ...")  # what onnxruntime-gpu prints for each miss
            calls.append("preload")

        module.preload_dlls = preload_dlls  # type: ignore[attr-defined]
    return module, calls


def loader(fail_on: str | None, message: str = LOADER_MISSING) -> tuple[list[str], object]:
    loaded: list[str] = []

    def load(path: str) -> object:
        loaded.append(Path(path).name)
        if fail_on and path.endswith(fail_on):
            raise OSError(message)
        return object()

    return loaded, load


def test_missing_cuda_library_is_one_line_with_the_install_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ort, calls = fake_ort(tmp_path)
    loaded, load = loader("libonnxruntime_providers_cuda.so")
    with pytest.raises(DeviceError) as info:
        prepare_cuda(CUDA_EP, ort=ort, load_library=load)  # type: ignore[arg-type]
    assert str(info.value) == EXPECTED
    assert calls == ["preload"] and loaded == ["libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"]
    assert capsys.readouterr().out == ""  # preload_dlls' own lines are not repeated to the user


def test_tensorrt_names_nvinfer_and_the_cuda_only_alternative(tmp_path: Path) -> None:
    ort, _ = fake_ort(tmp_path)
    _, load = loader("libonnxruntime_providers_tensorrt.so", "libnvinfer.so.10: cannot open shared object file: No such file")
    with pytest.raises(DeviceError, match=r"^TensorRT provider cannot start: libnvinfer\.so\.10 is missing\..*'gpu:N'"):
        prepare_cuda(TRT_EP, ort=ort, load_library=load)  # type: ignore[arg-type]


def test_loadable_provider_passes_and_old_onnxruntime_without_preload(tmp_path: Path) -> None:
    ort, _ = fake_ort(tmp_path, with_preload=False)
    loaded, load = loader(None)
    prepare_cuda(CUDA_EP, ort=ort, load_library=load)  # type: ignore[arg-type]
    assert loaded[-1] == "libonnxruntime_providers_cuda.so"


def test_other_load_errors_are_left_to_onnxruntime(tmp_path: Path) -> None:
    """Only a missing file is certain; an odd loader error must not block a GPU that may work."""
    ort, _ = fake_ort(tmp_path)
    _, load = loader("libonnxruntime_providers_cuda.so", "undefined symbol: Provider_GetHost")
    prepare_cuda(CUDA_EP, ort=ort, load_library=load)  # type: ignore[arg-type]


def test_cpu_build_and_cpu_provider_do_nothing(tmp_path: Path) -> None:
    ort, calls = fake_ort(tmp_path, libs=())
    loaded, load = loader(None)
    prepare_cuda(CUDA_EP, ort=ort, load_library=load)  # type: ignore[arg-type]
    prepare_cuda("CPUExecutionProvider", ort=ort, load_library=load)  # type: ignore[arg-type]
    assert loaded == [] and calls == ["preload"]


@pytest.mark.parametrize(
    ("message", "lib"),
    [
        (LOADER_MISSING, "libcublasLt.so.13"),
        ("libcudnn_graph.so.9: cannot open shared object file: No such file or directory", "libcudnn_graph.so.9"),
        ("libcudart.so: cannot open shared object file", "libcudart.so"),
        ("undefined symbol: foo", None),
    ],
)
def test_missing_library_parses_the_loader_message(message: str, lib: str | None) -> None:
    assert missing_library(message) == lib


def test_real_onnxruntime_gpu_without_cuda_names_the_library() -> None:
    """With onnxruntime-gpu (no [cuda,cudnn]) in a separate venv: FASTSEG_ORT_GPU_PYTHON=<its python>."""
    python = os.environ.get("FASTSEG_ORT_GPU_PYTHON")
    if not python:
        pytest.skip("set FASTSEG_ORT_GPU_PYTHON to a venv's python with onnxruntime-gpu (and no CUDA libraries)")
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver: the libraries may well load")
    src = Path(__file__).resolve().parents[2] / "src"
    code = (
        "from fastseg.engines.gpu_libs import prepare_cuda\n"
        "try:\n    prepare_cuda('CUDAExecutionProvider')\nexcept Exception as exc:\n"
        "    print(type(exc).__name__ + ': ' + str(exc))\nelse:\n    print('loaded')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("DeviceError: CUDA provider cannot start: lib"), done.stdout
    assert " is missing. Fix: pip install 'onnxruntime-gpu[cuda,cudnn]'" in out[0]
    assert sys.executable != python
