"""Folder steps of the file store that never follow a symbolic link out of its own tree.

The store owns everything under ``<cache_dir>/<prefix>``. A link found in there (a namespace
folder, a two-hex folder, the trash, an entry file) is foreign: it is removed as a link, never
followed. Steps that write or delete open the folders one by one, each relative to its parent
(``dir_fd``) with ``O_NOFOLLOW``, so a link swapped in between two steps is refused too. The
prefix folder itself being a link is an error rather than something to remove (a user may have
put it there); ``cache_dir`` above it belongs to the user and is followed as given.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

__all__ = [
    "O_NOFOLLOW",
    "check_base",
    "lexists_at",
    "open_base",
    "open_folder",
    "remove_tree",
    "walk_to",
]

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# Folders a read only passes through: O_PATH (Linux) skips the read-permission check and is
# ~0.15 us cheaper per step; such a descriptor still anchors *at() calls (dir_fd).
_O_WALK = (getattr(os, "O_PATH", 0) or os.O_RDONLY) | (_O_DIR & ~os.O_RDONLY)
# What opening a link (or a file) as a folder with O_NOFOLLOW | O_DIRECTORY fails with.
_NOT_A_FOLDER = frozenset({errno.ELOOP, errno.ENOTDIR})
_BASE_IS_A_LINK = (
    "the cache's own folder is a symbolic link or not a folder; the file store never follows "
    "links out of its tree (point cache_dir at the real folder instead)"
)


def check_base(base: str) -> None:
    """Raise when ``base`` is a link or not a folder; a missing one is fine (the first write
    makes it). Only reads metadata: a read-only ``cache_dir`` passes."""
    try:
        found = os.lstat(base)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(found.st_mode):
        raise OSError(errno.ELOOP, _BASE_IS_A_LINK, base)


def open_base(base: str, *, create: bool) -> int | None:
    """A descriptor of the prefix folder, made when missing and ``create``; None when missing."""
    try:
        return os.open(base, _O_DIR)
    except FileNotFoundError:
        if not create:
            return None
    except OSError as exc:
        if exc.errno in _NOT_A_FOLDER:
            raise OSError(exc.errno, _BASE_IS_A_LINK, base) from None
        raise
    os.makedirs(base, exist_ok=True)
    return open_base(base, create=False)


def _open_child(parent: int, name: str, *, create: bool) -> int | None:
    try:
        return os.open(name, _O_DIR, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            return None
    except OSError as exc:
        if exc.errno not in _NOT_A_FOLDER:
            raise
        if not create:
            return None  # a link where our folder belongs: nothing of ours is there
        # A link or a stray file where our folder belongs: remove it (unlink removes a link
        # itself, never its target) and make the folder.
        os.unlink(name, dir_fd=parent)
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, dir_fd=parent)
    return os.open(name, _O_DIR, dir_fd=parent)


def open_folder(base: str, parts: tuple[str, ...], *, create: bool) -> int | None:
    """A descriptor of ``base/part/...``, every step a real folder opened without following a
    link; missing folders are made when ``create``, else the answer is None."""
    fd = open_base(base, create=create)
    for part in parts:
        if fd is None:
            return None
        try:
            child = _open_child(fd, part, create=create)
        finally:
            os.close(fd)
        fd = child
    return fd


def walk_to(base: str, parts: tuple[str, ...]) -> int | None:
    """:func:`open_folder` for reads, kept lean for the file-hit path (each step ~1 us): a
    descriptor of ``base/part/...`` or None when a step is missing, a link or a file."""
    try:
        fd = os.open(base, _O_WALK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in _NOT_A_FOLDER:
            raise OSError(exc.errno, _BASE_IS_A_LINK, base) from None
        raise
    for part in parts:
        try:
            child = os.open(part, _O_WALK, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NOT_A_FOLDER or exc.errno == errno.ENOENT:
                return None
            raise
        os.close(fd)
        fd = child
    return fd


def lexists_at(name: str, folder: int) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def remove_tree(parent: int, name: str) -> int:
    """Delete ``name`` (in the folder ``parent``) and everything below it without following
    any link, the top included; returns bytes freed. Tolerates another process deleting the
    same tree at the same time."""
    freed = 0
    # fwalk with follow_symlinks=False never descends into a link, the top included, and hands
    # out each folder's descriptor, so every unlink is relative to a folder it really walked.
    for _path, dirs, files, folder in os.fwalk(
        name, topdown=False, follow_symlinks=False, dir_fd=parent
    ):
        for file in files:
            with contextlib.suppress(FileNotFoundError):
                size = os.stat(file, dir_fd=folder, follow_symlinks=False).st_size
                os.unlink(file, dir_fd=folder)
                freed += size
        for sub in dirs:
            _remove_folder(sub, folder)
    _remove_folder(name, parent)
    return freed


def _remove_folder(name: str, parent: int) -> None:
    try:
        os.rmdir(name, dir_fd=parent)
    except NotADirectoryError:  # a link to a folder: remove the link, never its target
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent)
    except OSError as exc:
        # gone, or refilled by a concurrent deleter's race: the next pass finishes it
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
            raise
