"""Where a directory run writes each input's results: one rule for ``fastseg predict`` and for
``predict --ray``, so that no result overwrites another and any name the OS can hold works.

- The output tree mirrors the input tree: ``IN/sub1/same.jpg`` -> ``OUT/sub1/same_res.png``.
  Files under a directory given as input are placed relative to it; other files (a single file,
  a glob, a list) relative to their common parent directory.
- In one output folder, files whose stems are equal (case-insensitively, so results also
  survive a copy to a case-insensitive disk) are told apart: in byte order of their paths the
  first keeps ``<stem>_res.png``, each other one keeps its suffix: ``<name>_res.png``
  (``good.jpg`` -> ``good_res.png``, ``good.png`` -> ``good.png_res.png``). The names depend only
  on the set of inputs, so a rerun writes the same files.
- A name whose result would exceed the file system's 255-byte limit is cut and given ``~`` and
  8 hex digits of a hash of its path relative to the input tree.
- Names that are not valid UTF-8 or hold control characters are kept as they are on disk;
  ``printable`` gives the form shown in messages and stored in the JSON's ``input_path``.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Sequence
from urllib.parse import urlsplit

NAME_MAX = 255  # bytes: Linux, macOS, Windows (NTFS counts UTF-16 units, fewer than UTF-8 bytes)
RESULT_SUFFIXES = ("_res.png", "_res.json")
_LONGEST_SUFFIX = max(len(s) for s in RESULT_SUFFIXES)
_CONTROL = {i: f"\\x{i:02x}" for i in [*range(0x20), 0x7F]} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def printable(path: str) -> str:
    """``path`` on one printable line: undecodable bytes as ``\\xNN``, control characters escaped."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text.translate(_CONTROL)


def _digest(text: str) -> str:
    return hashlib.sha256(os.fsencode(text)).hexdigest()[:8]


def _fit(stem: str, source: str) -> str:
    """``stem`` when ``<stem>_res.json`` fits NAME_MAX; else its longest head that fits with ``~<hash>``."""
    limit = NAME_MAX - _LONGEST_SUFFIX
    if len(os.fsencode(stem)) <= limit:
        return stem
    tag = f"~{_digest(source)}"
    head = stem
    while len(os.fsencode(head + tag)) > limit:
        head = head[:-1]
    return head + tag


def _split(source: str, dirs: Sequence[str]) -> tuple[str, str] | None:
    """(folder relative to its input directory, file name) for a file under one of ``dirs``."""
    best: tuple[str, str] | None = None
    for root in dirs:
        rel = os.path.relpath(source, root)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            continue
        folder, name = os.path.split(rel)
        if best is None or len(folder) < len(best[0]):
            best = (folder, name)
    return best


def _locate(sources: Sequence[str], dirs: Sequence[str]) -> list[tuple[str, str]]:
    """(relative output folder, file name) for each source."""
    placed: list[tuple[str, str] | None] = []
    loose: list[str] = []
    for src in sources:
        if "://" in src:  # a URL or object-store URI: its last path segment, no folders
            try:
                name = posixpath.basename(urlsplit(src).path) or "image"
            except ValueError:  # unparsable (http://[x]/): the download fails and lists it
                name = "image"
            placed.append(("", name))
            continue
        found = _split(src, dirs) if dirs else None
        placed.append(found)
        if found is None:
            loose.append(os.path.dirname(os.path.abspath(src)))
    common = os.path.commonpath(loose) if loose else ""
    out: list[tuple[str, str]] = []
    for src, found in zip(sources, placed):
        if found is None:
            folder = os.path.relpath(os.path.dirname(os.path.abspath(src)), common)
            found = ("" if folder == os.curdir else folder, os.path.basename(src))
        out.append(found)
    return out


def output_stems(sources: Sequence[str], *, given: Sequence[str] = ()) -> list[str]:
    """Each source's output path without the ``_res.png``/``_res.json`` ending, relative to the
    output directory (``sub1/same``, ``good.png``); distinct for distinct sources.

    Args:
        sources: the input files (paths or URIs), in any order.
        given: what the user passed (directories among them anchor the mirrored tree).
    """
    dirs = [g for g in given if "://" not in g and os.path.isdir(g)]
    located = _locate(sources, dirs)
    taken: set[tuple[str, str]] = set()  # (folder, output file name), case-folded
    for folder, _ in located:  # a mirrored folder's name is never also a result file's
        parts = [p for p in folder.split(os.sep) if p]
        for depth in range(len(parts)):
            taken.add((os.sep.join(parts[:depth]).casefold(), parts[depth].casefold()))
    stems = [""] * len(sources)
    order = sorted(range(len(sources)), key=lambda i: os.fsencode(sources[i]))
    for i in order:
        folder, name = located[i]
        rel = os.path.join(folder, name)  # hashed: names stay the same when the input tree moves
        base, _ = os.path.splitext(name)
        candidates = [base or name, name, f"{name}~{_digest(rel)}"]
        candidates += [f"{name}~{_digest(rel)}-{k}" for k in range(1, len(sources) + 1)]
        for candidate in (_fit(c, rel) for c in candidates):
            keys = [(folder.casefold(), (candidate + s).casefold()) for s in RESULT_SUFFIXES]
            if not any(k in taken for k in keys):
                taken.update(keys)
                stems[i] = os.path.join(folder, candidate)
                break
    return stems
