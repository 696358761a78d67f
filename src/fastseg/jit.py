"""numba, where fastseg compiles a kernel: whether it is installed, and the one way kernels are
decorated. Kernel modules (``head/_fused_kernels.py``, ``_png_kernels.py``) define their
functions at module level, so numba's disk cache finds them in the next process (functions
built inside a closure missed it every time and were recompiled, ~2.5 s per process).
Importing numba takes ~0.5 s, so only those modules import it, and only when asked to.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def compiled_available() -> bool:
    """Whether numba is installed (checked without importing it)."""
    return importlib.util.find_spec("numba") is not None


def kernel(fn: Callable[..., Any]) -> Any:
    """``fn`` compiled by numba: nogil (callers run kernels on plain threads), no bounds checks,
    fastmath off (exact rounding); cached on disk where numba finds a writable place (beside the
    module, NUMBA_CACHE_DIR or the user's cache), else compiled per process: numba refuses
    ``cache=True`` with nowhere to write."""
    import numba

    try:
        return numba.njit(nogil=True, cache=True, boundscheck=False)(fn)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        log.info("numba cannot cache %s here (%s); compiling it per process", fn.__name__, exc)
        return numba.njit(nogil=True, cache=False, boundscheck=False)(fn)
