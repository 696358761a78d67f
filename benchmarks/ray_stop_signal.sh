#!/usr/bin/env bash
# How long `fastseg serve --ray` takes to stop on a signal, started as a background job of this
# (non-interactive) script, so it inherits SIGINT ignored, as an earlier benchmark's server did.
# Usage: bash benchmarks/ray_stop_signal.sh INT|TERM MODEL_DIR [PORT]
set -u
SIG=$1; MODEL=$2; PORT=${3:-18790}; LOG=$(mktemp)
fastseg serve --ray --model "$MODEL" --engine ort --port "$PORT" --log-level warning > "$LOG" 2>&1 &
P=$!
for _ in $(seq 1 180); do grep -q "stops" "$LOG" && break; sleep 1; done
echo "SigIgn of the server: $(grep SigIgn /proc/$P/status | cut -f2)"
T0=$(date +%s.%N); kill -"$SIG" "$P"
for _ in $(seq 1 1200); do kill -0 "$P" 2>/dev/null || break; sleep 0.1; done
echo "SIG$SIG: exit after $(echo "$(date +%s.%N) - $T0" | bc | cut -c1-5) s, still alive: $(kill -0 "$P" 2>/dev/null && echo yes || echo no), Ray processes left: $(pgrep -cf 'raylet|gcs_server')"
rm -f "$LOG"
