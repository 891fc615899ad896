"""Invalidate and clear for the file store: namespace folders renamed into a trash, then deleted.

One rename hides a whole namespace from every process at once, however many entries it holds;
deleting what was moved is housekeeping that may fail and is finished by the next clear or
maintenance pass. A folder that cannot be moved (a read-only or immutable prefix folder) has
its entries expired in place instead (``file_withdrawal``), so no process serves them; the
refusal is still raised. '~' is not allowed in namespace names (``config.check_name``), so no
namespace can be the trash.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Sequence

from .file_ledger import Ledger
from .file_tree import lexists_at, open_base, open_folder, remove_tree
from .file_withdrawal import expire_tree

__all__ = ["TRASH", "empty_trash", "trash_folders"]

TRASH = "~trash"
# Renames tried when the folder to move was replaced between our rename and our look.
_MOVE_ATTEMPTS = 3


def trash_folders(ledger: Ledger, base: str, names: Sequence[str] | None) -> None:
    """Rename each namespace folder (all of them when ``names`` is None) into the trash, which
    hides all its entries from every process in one atomic step, then delete what was moved.
    Everything happens relative to descriptors of real folders: a link in the tree is moved
    and removed as a link, never followed.

    Hiding is the promise, so only its errors are raised; deleting is housekeeping, and what a
    failure leaves behind goes with the next clear or maintenance pass.
    """
    top = open_base(base, create=False)
    if top is None:
        return
    trash: int | None = None
    try:
        if names is None:
            names = [name for name in os.listdir(top) if name != TRASH]
            with contextlib.suppress(OSError):  # leftovers of a crashed process
                trash = open_folder(base, (TRASH,), create=True)
                if trash is not None:
                    ledger.grow(-empty_trash(trash))
        moved: list[str] = []
        refused: OSError | None = None
        for name in names:
            if not lexists_at(name, top):
                continue
            try:
                if trash is None:
                    trash = open_folder(base, (TRASH,), create=True)
                assert trash is not None
                target = _move_to_trash(top, trash, name)
            except OSError as exc:
                # Not hidden by a move: no process may serve what it holds all the same.
                expire_tree(top, name)
                refused = refused or exc
                continue
            if target is not None:
                moved.append(target)
        for target in moved:
            assert trash is not None
            with contextlib.suppress(OSError):
                ledger.grow(-remove_tree(trash, target))
        if refused is not None:
            raise refused
    finally:
        os.close(top)
        if trash is not None:
            os.close(trash)


def _move_to_trash(top: int, trash: int, name: str) -> str | None:
    """Rename ``name`` (in ``top``) into ``trash``; its new name, or None when there was
    nothing. The trash is held open, so another process emptying it cannot pull it away."""
    target = f"{name}-{secrets.token_hex(6)}"
    for attempt in range(_MOVE_ATTEMPTS):
        try:
            os.rename(name, target, src_dir_fd=top, dst_dir_fd=trash)
        except FileNotFoundError:
            if not lexists_at(name, top):
                return None
            # Moved away by a concurrent invalidate or clear (of any process) and made again
            # by a racing write before we looked: move the new one. A trash that is gone
            # fails every time and is raised.
            if attempt == _MOVE_ATTEMPTS - 1:
                raise
            continue
        return target
    raise AssertionError("unreachable")


def empty_trash(trash: int) -> int:
    """Delete everything in the trash but the folder itself, which a concurrent invalidate may be
    renaming into right now; returns bytes freed."""
    return sum(remove_tree(trash, name) for name in os.listdir(trash))
