#!/usr/bin/env bash
# fastseg bench, two source trees alternating: how a change moves pre/infer/e2e on a noisy host.
#   bash benchmarks/bench_ab.sh OLD_SRC NEW_SRC [ROUNDS]
#   e.g. git worktree add /tmp/old HEAD~1 && bash benchmarks/bench_ab.sh /tmp/old/src src 3
# Env: MODELS (PP-LiteSeg-T,SeaFormer_tiny), ENGINE (openvino-bf16), IMAGE (a 2048x1024 frame),
# OUT (/tmp/bench-ab), FASTSEG_HOME (where bench keeps its reference builds). Each invocation is
# its own process (bench's workers too), so the two trees never share a process; prints one line
# per tree, round and model, with the pre+post share of end to end.
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); rounds=${3:-3}
image=${IMAGE:-../shared/data/images/cityscapes/leftImg8bit/val/frankfurt/frankfurt_000001_063045_leftImg8bit.png}
out=${OUT:-/tmp/bench-ab}
python=$(dirname "$0")/../.venv/bin/python
for round in $(seq "$rounds"); do
  for tree in old new; do
    src=$old; [ "$tree" = new ] && src=$new
    echo "round $round $tree $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)"
    PYTHONPATH=$src "$python" -m fastseg bench --models "${MODELS:-PP-LiteSeg-T,SeaFormer_tiny}" --size 1024x2048 \
      --runs 9 --warmup 2 --threads 2 --image "$image" --engine "${ENGINE:-openvino-bf16}" --out "$out/$tree-$round" >/dev/null
  done
done
"$python" - "$out" <<'PY'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*/bench.json")):
    for m in json.loads(f.read_text())["models"]:
        s = {k: v["median"] for k, v in m["backends"]["fastseg"]["stats"].items()}
        share = (s["pre"] + s["post"]) / s["e2e"] * 100
        print(f"{f.parent.name:6s} {m['name']:15s} pre {s['pre']:5.1f}  infer {s['infer']:6.1f}  post {s['post']:4.1f}  "
              f"e2e {s['e2e']:6.1f}  pre+post share {share:4.1f}%")
PY
