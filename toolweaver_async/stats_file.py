"""A file that caches add their counters to when they close, so ``toolweaver-async stats`` and
``doctor`` can say what every run of an agent saved (opt-in: ``CacheConfig.stats_file`` or
``TOOLWEAVER_STATS_FILE``).

One JSON document, ``{"version": 1, "runs": N, "namespaces": {name: counters}}``, rewritten
whole (temporary file + ``os.replace``) under an exclusive ``flock`` on ``<file>.lock``, so
processes closing at the same time add up instead of overwriting each other.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .stats import CacheStats, NamespaceStats

__all__ = ["add_to_stats_file", "read_stats_file"]

_VERSION = 1
_COUNTERS = tuple(f.name for f in fields(NamespaceStats))


def _add(into: dict[str, Any], more: dict[str, Any]) -> None:
    for name in _COUNTERS:
        value = more.get(name)
        if isinstance(value, dict):
            bucket = into.setdefault(name, {})
            for store, count in value.items():
                bucket[store] = bucket.get(store, 0) + count
        elif isinstance(value, int | float) and not isinstance(value, bool):
            into[name] = into.get(name, 0) + value


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"version": _VERSION, "runs": 0, "namespaces": {}}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"stats file {path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        raise ConfigError(f"stats file {path} is not a toolweaver-async stats file")
    return data


def add_to_stats_file(path: Path, stats: CacheStats) -> None:
    """Add one run's counters to ``path`` (created with its folder if missing). Blocking:
    call it from a worker thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _load(path)
        data["runs"] += 1
        for name, counters in stats.namespaces.items():
            _add(data["namespaces"].setdefault(name, {}), counters.to_dict())
        scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        scratch.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(scratch, path)


def read_stats_file(path: Path) -> tuple[int, CacheStats]:
    """The runs counted in ``path`` and their counters added up (savings included)."""
    data = _load(path)
    namespaces = {
        name: NamespaceStats(**{k: v for k, v in counters.items() if k in _COUNTERS})
        for name, counters in sorted(data["namespaces"].items())
    }
    overall: dict[str, Any] = {}
    for counters in namespaces.values():
        _add(overall, counters.to_dict())
    return int(data["runs"]), CacheStats(overall=NamespaceStats(**overall), namespaces=namespaces)
