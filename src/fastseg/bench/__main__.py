"""Worker entry: ``python -m fastseg.bench --worker SPEC.json`` (spawned by ``runner.run_worker``)."""

from __future__ import annotations

import sys
from pathlib import Path

from fastseg.bench.workers import worker_main

if __name__ == "__main__":  # pragma: no cover - exercised through run_worker
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(Path(sys.argv[2])))
    print("usage: python -m fastseg.bench --worker SPEC.json (internal; use 'fastseg bench')", file=sys.stderr)
    sys.exit(2)
