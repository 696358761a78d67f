#!/usr/bin/env bash
# Build the folder remote_bench.sh runs from on a lent device machine (64 MiB a call, no registry,
# Python 3.12 there): OpenVINO's CPU plugin and the PNG codecs from their cp312 wheels, the
# reference builds' graphs without their large weights, and the photo mosaic.
#   FASTSEG_HOME=... bash benchmarks/remote_carry.sh OUT_DIR MODEL [MODEL ...]
# Each MODEL must already be built by `fastseg bench` under $FASTSEG_HOME/bench/reference/MODEL
# (onnx/; onnx-int8-bench/ after `--engine int8` or `openvino-int8`; onnx-int8-bf16-bench/ after
# `--engine openvino-int8-bf16`, run there as MODEL/int8-bf16 with OpenVINO's bf16 hint). bf16 variants
# are not carried: the device machine writes them (`fastseg quantize --precision bf16 --min-agreement 0`).
set -euo pipefail
out=$1; shift
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
refs=${FASTSEG_HOME:?set FASTSEG_HOME to the bench home that holds the reference builds}/bench/reference
ov=$("$py" -c "import openvino; print(openvino.__version__.split('-')[0])")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$work/wheels" \
  "openvino==$ov" openvino-telemetry isal imagecodecs scikit-image
mkdir -p "$work/site"
for w in "$work"/wheels/{openvino,isal,imagecodecs}-*.whl "$work"/wheels/openvino_telemetry-*.whl; do
  unzip -q -o "$w" -d "$work/site"
done
# Only what the CPU runs: OpenVINO's CPU plugin with the ONNX and IR frontends, imagecodecs' PNG codecs.
( cd "$work/site/openvino/libs" && rm -f cache.json libopenvino_intel_{gpu,npu}_plugin.so \
    libopenvino_{gguf,jax,paddle,pytorch,tensorflow,tensorflow_lite}_frontend.so.* )
rm -rf "$work/site/openvino/include"
keep=(__init__.py imagecodecs.py _imagecodecs.py _numpy.py typing.py py.typed _shared.abi3.so _shared_cython.abi3.so
      _imcd.abi3.so _spng.abi3.so _deflate.abi3.so _zlib.abi3.so _zlibng.abi3.so _png.abi3.so _isal.abi3.so)
for f in "$work"/site/imagecodecs/*; do [[ " ${keep[*]} " == *" $(basename "$f") "* ]] || rm -rf "$f"; done
find "$work/site/imagecodecs.libs" -type f ! -name 'libdeflate-*' ! -name 'libisal-*' ! -name 'libpng16-*' -delete
tar -cJf "$out/site.tar.xz" -C "$work/site" .

for m in "$@"; do
  "$py" "$here/benchmarks/remote_bench.py" strip "$refs/$m/onnx" "$work/models/$m/fp32"
  for variant in int8 int8-bf16; do
    if [ -d "$refs/$m/onnx-$variant-bench" ]; then
      "$py" "$here/benchmarks/remote_bench.py" strip "$refs/$m/onnx-$variant-bench" "$work/models/$m/$variant"
    fi
  done
done
tar -cJf "$out/models.tar.xz" -C "$work/models" .

unzip -q -o "$work"/wheels/scikit_image-*.whl 'skimage/data/*' -d "$work/skimage"
"$py" "$here/benchmarks/remote_bench.py" image "$work/skimage/skimage/data" "$out/mosaic.png"
du -ch "$out"/* | tail -1
