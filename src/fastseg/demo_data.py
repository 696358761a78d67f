"""Files shipped inside the package for a first run without any input of one's own.

``demo_image()`` is a real street photo (Apache-2.0, see ``fastseg/data/NOTICE.md``) that
``fastseg predict`` segments when no ``--input`` is given.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEMO_IMAGE_NAME = "demo_street.jpg"


def demo_image() -> Path:
    """The packaged demo street photo (1024x512 JPEG) as a file path."""
    return Path(str(resources.files("fastseg").joinpath("data", DEMO_IMAGE_NAME)))
