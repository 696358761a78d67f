#!/usr/bin/env bash
# Issue 17's rows on a lent device machine's CPU (16 cores there; two are used, pinned), with
# fastseg from this checkout and what benchmarks/remote_carry.sh put in CARRY here:
#   CARRY/site.tar.xz    openvino (CPU plugin, ONNX and IR frontends), openvino-telemetry, isal and
#                        imagecodecs (spng, deflate, zlib) unpacked from their cp312 wheels
#   CARRY/models.tar.xz  MODEL/{fp32,int8}/ from `remote_bench.py strip` of the reference builds;
#                        MODEL/bf16/ is written here from fp32 by `fastseg quantize --precision bf16`
#   CARRY/mosaic.png     `remote_bench.py image` of scikit-image's bundled photos
# Then, on the machine: [LIGHT=jobs] [HEAVY=jobs] [IMAGE=file] bash benchmarks/remote_bench.sh CARRY OUT_DIR [SECONDS]
set -u
carry=$1 out=$2 budget=${3:-330}
image=${IMAGE:-$carry/mosaic.png}  # IMAGE: another image file in CARRY
t0=$(date +%s)
{
  date -u
  lscpu
  grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(amx_.*|avx512_bf16|avx512f|avx512_vnni|avx_vnni|avx2)$' | tr '\n' ' '
  echo
  uptime
  free -g | head -2
  nvidia-smi -L 2>/dev/null
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt" | grep -E 'Model name|^CPU\(s\)|Thread|amx|avx|load'
rm -rf /tmp/site /tmp/models && mkdir -p /tmp/site /tmp/models  # a second run on a warm machine starts clean
tar -xJf "$carry/site.tar.xz" -C /tmp/site
tar -xJf "$carry/models.tar.xz" -C /tmp/models
export PYTHONPATH=/tmp/site:$PWD/src:$PWD FASTSEG_HOME=/tmp/fastseg-home PYTHONUNBUFFERED=1
python3 -c "import openvino, onnxruntime, numba, numpy, cv2, onnx, isal.isal_zlib; from imagecodecs import spng_decode, deflate_decode; print('openvino', openvino.__version__, '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers(), '| numba', numba.__version__, '| numpy', numpy.__version__, '| opencv', cv2.__version__, '| onnx', onnx.__version__)" | tee -a "$out/machine.txt"
for d in /tmp/models/*/*; do python3 benchmarks/remote_bench.py fill "$d" & done
wait
# UNGATED (random weights): what `fastseg quantize --precision bf16 --min-agreement 0` writes, through
# the Python API (the machine's Python may lack the CLI's click/rich).
python3 -c "import sys, pathlib; from fastseg.precision.quantize import quantize_model
for d in map(pathlib.Path, sys.argv[1:]): quantize_model(d, None, d.parent / 'bf16', precision='bf16', min_agreement=0)" \
  /tmp/models/*/fp32
echo "filled in $(( $(date +%s) - t0 )) s"
# The decode paths on this CPU's two cores (IMAGE if a PNG, alternating per run, pixels checked against OpenCV).
rm -rf /tmp/decode && mkdir -p /tmp/decode && cp "$image" /tmp/decode/
taskset -c "$(python3 benchmarks/remote_bench.py cpus)" python3 benchmarks/preprocess_ab.py decode --images /tmp/decode --runs 15 \
  2>&1 | tee "$out/decode.txt"
# LIGHT / HEAVY: comma-separated MODEL/VARIANT:ENGINE jobs (default: issue 17's rows; HEAVY=- runs none).
# A job whose variant was not carried (int8, int8-bf16) is recorded as failed and the rest go on.
light=${LIGHT:-PP-LiteSeg-T/bf16:openvino,PP-LiteSeg-T/int8:openvino,PP-LiteSeg-T/int8-bf16:openvino,\
PP-LiteSeg-T/fp32:openvino,PP-LiteSeg-T/fp32:ort,SeaFormer_tiny/bf16:openvino,SeaFormer_tiny/fp32:ort,\
SeaFormer_tiny/fp32:openvino,SegFormer-B0/bf16:openvino,SegFormer-B0/fp32:openvino,PP-LiteSeg-B/bf16:openvino,\
PP-LiteSeg-B/int8:openvino,PP-LiteSeg-B/int8-bf16:openvino,PP-LiteSeg-B/fp32:openvino}
if python3 -c "import onnxruntime, sys; sys.exit('CUDAExecutionProvider' not in onnxruntime.get_available_providers())"; then
  light=PP-LiteSeg-T/fp32:ort@gpu,$light
fi
python3 benchmarks/remote_bench.py run --models /tmp/models --image "$image" --jobs "$light" \
  --out "$out/results.json" --runs 7 --warmup 2 --timeout 100 --budget $(( budget / 2 ))
heavy=${HEAVY:-Deeplabv3-R101/bf16:openvino,Deeplabv3-R101/int8:openvino,Deeplabv3-R101/int8-bf16:openvino,\
OCRNet_HRNet-W18/bf16:openvino,OCRNet_HRNet-W18/int8-bf16:openvino,Deeplabv3_Plus-R50/bf16:openvino,\
Deeplabv3_Plus-R50/int8:openvino,Deeplabv3_Plus-R50/int8-bf16:openvino,OCRNet_HRNet-W18/fp32:openvino,\
Deeplabv3_Plus-R50/fp32:openvino,Deeplabv3-R101/fp32:openvino}
[ "$heavy" = - ] || python3 benchmarks/remote_bench.py run --models /tmp/models --image "$image" --jobs "$heavy" \
  --out "$out/results.json" --runs 3 --warmup 1 --timeout 120 --budget $(( budget - ($(date +%s) - t0) ))
echo "done in $(( $(date +%s) - t0 )) s"
