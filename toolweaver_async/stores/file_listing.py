"""The folder walk and the reads behind ``FileStore.list_entries``.

File names are hashes, so the keys live only inside the files: a listing reads each entry file
(header, recorded key, data) in a worker thread, one two-hex subfolder at a time and at most
``_ENTRIES_PER_STEP`` files a step, so memory stays bounded by a step, never by the store.
Every folder is opened relative to its parent with ``O_NOFOLLOW`` (``file_tree``): a folder
swapped for a link lists nothing, never another tree's entries.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .file_format import HEADER as _HEADER
from .file_format import MAGIC as _MAGIC
from .file_format import O_READ as _O_READ
from .file_format import TEMP_SUFFIX as _TEMP_SUFFIX
from .file_format import read_all as _read_all
from .file_tree import open_folder

__all__ = ["entry_names", "read_named_entries", "subfolders"]


def subfolders(folder: str) -> list[str]:
    """The two-hex subfolders of a namespace folder, sorted; none when it does not exist."""
    base, namespace = os.path.split(folder)
    return sorted(os.path.join(folder, n) for n in _names_in(base, (namespace,)) if len(n) == 2)


def entry_names(subfolder: str) -> list[str]:
    """The entry files of one subfolder (temporary files of writers in flight left out)."""
    names = _names_in(*_place(subfolder))  # none when moved away by an invalidate or clear
    return sorted(n for n in names if not n.startswith(".") and not n.endswith(_TEMP_SUFFIX))


def _place(subfolder: str) -> tuple[str, tuple[str, str]]:
    """``(base, (namespace, two hex))`` of a subfolder path made by :func:`subfolders`."""
    folder, hex2 = os.path.split(subfolder)
    base, namespace = os.path.split(folder)
    return base, (namespace, hex2)


def _names_in(base: str, parts: tuple[str, ...]) -> list[str]:
    fd = open_folder(base, parts, create=False)
    if fd is None:  # missing, or a link where a folder belongs
        return []
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def read_named_entries(
    subfolder: str, names: Sequence[str], prefix: str, now: float
) -> list[tuple[str, bytes]]:
    """``(key, data)`` of each whole, unexpired entry among ``names`` whose recorded key starts
    with ``prefix``. Broken or expired files are skipped, not removed: reads own that."""
    folder = open_folder(*_place(subfolder), create=False)
    if folder is None:
        return []
    try:
        return _read_named_entries(folder, names, prefix, now)
    finally:
        os.close(folder)


def _read_named_entries(
    folder: int, names: Sequence[str], prefix: str, now: float
) -> list[tuple[str, bytes]]:
    found = []
    for name in names:
        try:
            fd = os.open(name, _O_READ, dir_fd=folder)
        except OSError:
            continue
        try:
            raw = _read_all(fd)
        except OSError:
            continue
        finally:
            os.close(fd)
        if len(raw) < _HEADER.size:
            continue
        magic, key_len, expires_at, data_len = _HEADER.unpack_from(raw)
        start = _HEADER.size + key_len
        if magic != _MAGIC or len(raw) - start != data_len or expires_at <= now:
            continue  # NaN (never expires) compares False
        try:
            key = raw[_HEADER.size : start].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            continue
        if key.startswith(prefix):
            found.append((key, raw[start:]))
    return found
