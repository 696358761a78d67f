"""The ``fastseg`` command line (click). Argument parsing only: each command calls into the
module that owns the concern. Nothing imports this package. This is the one place that reads
environment variables (through ``zoo.cache_home``).

``app`` holds the group, one module per command (``models``, ``predict`` with ``get-config``,
``serve``, ``bench``, ``convert``, ``evaluate``, ``quantize``, ``tune``), and ``options`` the options several commands share and the size parsers.
"""

from fastseg.cli.app import main

__all__ = ["main"]
