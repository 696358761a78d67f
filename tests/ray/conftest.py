"""Make ``import ray`` mean the Ray distribution in these tests.

pytest's ``pythonpath`` puts ``tests/`` on ``sys.path``, where this folder (``tests/ray``) would
shadow Ray itself: ``import ray`` in a test, or in fastseg's code under test, found this package
(``module 'ray' has no attribute 'init'``). Importing the real Ray first, with ``tests/`` left
out of the path for that one import, puts it in ``sys.modules`` for everyone after.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]


def _import_real_ray() -> None:
    loaded = sys.modules.get("ray")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent.parent != _TESTS:
        return  # the real one is already there
    sys.modules.pop("ray", None)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _TESTS]
    try:
        importlib.import_module("ray")
    except ImportError:
        sys.modules.pop("ray", None)  # no Ray: the tests skip with importorskip
    finally:
        sys.path[:] = saved


_import_real_ray()
