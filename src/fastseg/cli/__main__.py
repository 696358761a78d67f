"""``python -m fastseg.cli``: the same as the ``fastseg`` script."""

from fastseg.cli import main

main()
