"""Plain, frozen configuration: :class:`CacheConfig`, :class:`NamespacePolicy`, and ``from_env``.

The environment is read here and nowhere else, once, when a config is built.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .redis_url import SENTINEL_SCHEMES, check_redis_url, redact_url

__all__ = [
    "DEFAULT_NAMESPACES",
    "STORE_NAMES",
    "BreakerSettings",
    "CacheConfig",
    "NamespacePolicy",
    "redact_url",
]

STORE_NAMES = ("memory", "redis", "file")

# Per-namespace bookkeeping (stats counters, memos) is kept for this many namespaces at most;
# counts of the namespaces beyond are summed under OTHER_NAMESPACES, a name no namespace can
# have ('~' fails check_name). 200 000 namespaces must not cost 160 MB for ever.
MAX_TRACKED_NAMESPACES = 1024
OTHER_NAMESPACES = "~other"

# fullmatch, never match with "$": "$" also matches before a trailing newline.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

HOUR = 3600.0
DAY = 24 * HOUR


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class NamespacePolicy:
    """How entries of one namespace live.

    ``ttl`` is the freshness in seconds (``None``: never expires). ``stale_ttl`` is a grace period
    after ``ttl`` during which ``get_or_set`` may serve the old value while one refresh runs.
    ``ttl_jitter`` spreads expiries of keys written together (a fraction of ``ttl``, 0..1).
    ``early_refresh_beta`` > 0 enables probabilistic early refresh (XFetch) of hot keys.
    ``negative_ttl`` > 0 caches loader exceptions for that long (off by default).
    ``share_objects`` returns the stored object itself from memory instead of a private copy:
    faster, but callers must never mutate what they get. ``cost_per_call`` is what one loader
    call costs (an API price); ``stats()`` turns hits into ``saved_cost`` with it.
    """

    ttl: float | None = HOUR
    stale_ttl: float = 0.0
    ttl_jitter: float = 0.0
    early_refresh_beta: float = 0.0
    negative_ttl: float | None = None
    share_objects: bool = False
    # what one loader call of this namespace costs (an API price, in any currency): stats()
    # reports saved_cost = hits x cost_per_call
    cost_per_call: float = 0.0

    def __post_init__(self) -> None:
        if not (_is_number(self.cost_per_call) and self.cost_per_call >= 0):
            raise ConfigError(
                f"NamespacePolicy.cost_per_call must be >= 0, got {self.cost_per_call!r}"
            )
        if self.ttl is not None and not (_is_number(self.ttl) and self.ttl > 0):
            raise ConfigError(f"NamespacePolicy.ttl must be > 0 seconds or None, got {self.ttl!r}")
        if not (_is_number(self.stale_ttl) and self.stale_ttl >= 0):
            raise ConfigError(f"NamespacePolicy.stale_ttl must be >= 0, got {self.stale_ttl!r}")
        if not (_is_number(self.ttl_jitter) and 0 <= self.ttl_jitter <= 1):
            raise ConfigError(
                f"NamespacePolicy.ttl_jitter must be in [0, 1], got {self.ttl_jitter!r}"
            )
        if not (_is_number(self.early_refresh_beta) and self.early_refresh_beta >= 0):
            raise ConfigError(
                f"NamespacePolicy.early_refresh_beta must be >= 0, got {self.early_refresh_beta!r}"
            )
        if self.negative_ttl is not None and not (
            _is_number(self.negative_ttl) and self.negative_ttl > 0
        ):
            raise ConfigError(
                f"NamespacePolicy.negative_ttl must be > 0, got {self.negative_ttl!r}"
            )


DEFAULT_NAMESPACES: Mapping[str, NamespacePolicy] = {
    "default": NamespacePolicy(ttl=HOUR),
    "catalog": NamespacePolicy(ttl=DAY),
    "search": NamespacePolicy(ttl=HOUR),
    "embeddings": NamespacePolicy(ttl=7 * DAY),
    "tools": NamespacePolicy(ttl=DAY),
    "results": NamespacePolicy(ttl=300.0),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerSettings:
    """Circuit-breaker settings shared by every fallible store (see :class:`CircuitBreaker`).

    Validated here and only here: a :class:`CircuitBreaker` keeps this object as it is.
    """

    failure_threshold: int = 5
    recovery_timeout: float = 2.0
    max_recovery_timeout: float = 30.0
    half_open_max_calls: int = 1
    failure_rate_threshold: float = 0.5
    window_size: int = 50
    minimum_calls: int = 20
    # Each open period is spread by +/- this share, so breakers that tripped together (one per
    # process) do not all probe the store in the same instant.
    jitter: float = 0.1
    # While open, ping the store this often off the agents' path; an answer ends the open
    # period early (see resilience/recovery_watch.py). None: wait out the open period.
    health_check_interval: float | None = 0.5

    def __post_init__(self) -> None:
        counts = (
            self.failure_threshold,
            self.half_open_max_calls,
            self.window_size,
            self.minimum_calls,
        )
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
            raise ConfigError(
                "failure_threshold, half_open_max_calls, window_size and minimum_calls must be "
                f"integers, got {counts!r}"
            )
        if self.failure_threshold < 1 or self.half_open_max_calls < 1:
            raise ConfigError("failure_threshold and half_open_max_calls must be >= 1")
        base, cap = self.recovery_timeout, self.max_recovery_timeout
        if not (_is_number(base) and _is_number(cap) and 0 < base <= cap):
            raise ConfigError(
                f"need 0 < recovery_timeout <= max_recovery_timeout < inf, got {base!r}, {cap!r}"
            )
        if not (_is_number(self.failure_rate_threshold) and 0 < self.failure_rate_threshold <= 1):
            raise ConfigError("failure_rate_threshold must be in (0, 1]")
        if self.window_size < 1 or not 1 <= self.minimum_calls <= self.window_size:
            raise ConfigError("need window_size >= 1 and 1 <= minimum_calls <= window_size")
        if not (_is_number(self.jitter) and 0 <= self.jitter < 1):
            raise ConfigError(f"jitter must be in [0, 1), got {self.jitter!r}")
        interval = self.health_check_interval
        if interval is not None and not (_is_number(interval) and interval > 0):
            raise ConfigError(f"health_check_interval must be None or > 0, got {interval!r}")


DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class _DefaultRedisURL(str):
    """The default ``redis_url``, told apart from a URL the caller gave (which turns Redis on)."""

    __slots__ = ()


_UNSET_REDIS_URL = _DefaultRedisURL(DEFAULT_REDIS_URL)


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "toolweaver-async"


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    """Everything an :class:`AsyncToolCache` needs, with defaults right for most agents.

    ``namespaces`` given here are merged over :data:`DEFAULT_NAMESPACES`; an unknown namespace
    takes the ``default`` policy. ``stores`` is the chain in read order; ``"redis"`` is dropped
    while ``use_redis`` is false. ``use_redis`` left out (``None``) means: on when a
    ``redis_url`` is given, off otherwise; after construction it is always a ``bool``.
    """

    use_redis: bool | None = None
    redis_url: str = _UNSET_REDIS_URL
    redis_password: str | None = None
    cache_dir: Path = field(default_factory=_default_cache_dir)
    key_prefix: str = "tw"
    namespaces: Mapping[str, NamespacePolicy] = field(default_factory=dict)
    stores: tuple[str, ...] = STORE_NAMES
    # memory layer
    memory_max_entries: int = 10_000
    memory_max_bytes: int = 64 * 1024 * 1024
    # file layer
    file_max_bytes: int = 1024 * 1024 * 1024
    # a read, write or delete not done by then fails (and counts against the file breaker)
    file_timeout: float = 1.0
    # file writes land behind the caller through a bounded, coalescing queue (False: every set
    # waits for its file write, as before); callers wait while the queue is full
    file_write_behind: bool = True
    file_queue_max_entries: int = 2_000
    file_queue_max_bytes: int = 64 * 1024 * 1024
    # any value
    max_value_bytes: int = 16 * 1024 * 1024
    # Redis: a dead or black-holed server must cost milliseconds, not seconds
    redis_connect_timeout: float = 0.25
    redis_command_timeout: float = 0.25
    redis_pool_size: int = 64
    redis_tls_verify: bool = True
    # Redis Cluster: None detects it when the store first connects (INFO cluster); True skips
    # the detection and speaks cluster; False forces a standalone server.
    redis_cluster: bool | None = None
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    # outage journal: writes that could not reach Redis, replayed when it is back
    journal_max_entries: int = 10_000
    # bytes of journaled values; past it the oldest journaled sets become deletes of their keys
    journal_max_bytes: int = 64 * 1024 * 1024
    # a JSON file each cache adds its counters to when it closes (toolweaver-async stats)
    stats_file: Path | None = None
    # Seconds a memory entry may be served while no invalidation channel vouches for it (see
    # toolweaver_async.coherence); 0: memory serves nothing unvouched; None: coherence off,
    # memory trusts entries until their TTL (one process alone).
    coherence_window: float | None = 1.0

    def __post_init__(self) -> None:
        # A URL given on purpose is a wish to use Redis: silently running without it was the
        # most common surprise of users porting from ToolWeaver (no Redis key ever written).
        explicit_url = type(self.redis_url) is not _DefaultRedisURL
        if self.use_redis is None:
            object.__setattr__(self, "use_redis", explicit_url)
        object.__setattr__(self, "redis_url", str(self.redis_url))
        merged = dict(DEFAULT_NAMESPACES)
        for name, policy in self.namespaces.items():
            check_name(name, what="namespace")
            if not isinstance(policy, NamespacePolicy):
                raise ConfigError(f"namespace {name!r}: expected NamespacePolicy, got {policy!r}")
            merged[name] = policy
        object.__setattr__(self, "namespaces", merged)
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())
        if self.stats_file is not None:
            object.__setattr__(self, "stats_file", Path(self.stats_file).expanduser())
        object.__setattr__(self, "stores", tuple(self.stores))
        check_name(self.key_prefix, what="key_prefix")
        unknown = [s for s in self.stores if s not in STORE_NAMES]
        if unknown or len(set(self.stores)) != len(self.stores):
            raise ConfigError(
                f"stores must be distinct names from {STORE_NAMES}, got {self.stores}"
            )
        if not self.enabled_stores:
            raise ConfigError(
                f"no store left in the chain: stores={self.stores}, use_redis={self.use_redis}"
            )
        if self.use_redis:
            check_redis_url(self.redis_url)
        if self.redis_cluster not in (None, True, False):
            raise ConfigError(
                f"redis_cluster must be None, True or False, got {self.redis_cluster!r}"
            )
        if self.redis_cluster and self.redis_url.startswith(SENTINEL_SCHEMES):
            raise ConfigError("redis_cluster=True cannot be used with a redis+sentinel:// URL")
        for name in (
            "memory_max_entries",
            "memory_max_bytes",
            "file_max_bytes",
            "file_queue_max_entries",
            "file_queue_max_bytes",
            "max_value_bytes",
            "redis_pool_size",
            "journal_max_entries",
            "journal_max_bytes",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        window = self.coherence_window
        if window is not None and not (_is_number(window) and window >= 0):
            raise ConfigError(f"coherence_window must be None or >= 0 seconds, got {window!r}")
        for name in ("redis_connect_timeout", "redis_command_timeout", "file_timeout"):
            value = getattr(self, name)
            if not (_is_number(value) and value > 0):
                raise ConfigError(f"{name} must be > 0 seconds, got {value!r}")

    def __repr__(self) -> str:
        """Every field, with the Redis URL redacted and the password hidden: configs end up
        in logs, tracebacks and bug reports."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "redis_url":
                text = repr(redact_url(value))
            elif f.name == "redis_password":
                text = "None" if value is None else "'***'"
            else:
                text = repr(value)
            shown.append(f"{f.name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def describe_chain(self) -> str:
        """The chain as it runs, for one log line: ``memory -> redis (url) -> file (folder)``."""
        parts = []
        for name in self.enabled_stores:
            if name == "redis":
                parts.append(f"redis ({redact_url(self.redis_url)})")
            elif name == "file":
                parts.append(f"file ({self.cache_dir})")
            else:
                parts.append(name)
        off = "" if self.use_redis else "; Redis off (USE_REDIS=false, no redis_url given)"
        return f"prefix {self.key_prefix!r}: {' -> '.join(parts)}{off}"

    @property
    def enabled_stores(self) -> tuple[str, ...]:
        """The chain as it runs: ``stores`` without ``"redis"`` unless ``use_redis``."""
        return tuple(s for s in self.stores if s != "redis" or self.use_redis)

    def policy(self, namespace: str) -> NamespacePolicy:
        """The policy of ``namespace``; an unknown namespace takes the ``default`` policy."""
        found = self.namespaces.get(namespace)
        return found if found is not None else self.namespaces["default"]

    def with_changes(self, **changes: Any) -> CacheConfig:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_fields(cls, **values: Any) -> CacheConfig:
        """``CacheConfig(**values)``, with a ``ConfigError`` naming unknown fields."""
        _check_field_names(cls, values)
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> CacheConfig:
        """Build a config from ``USE_REDIS``, ``REDIS_URL``, ``REDIS_PASSWORD``,
        ``TOOLWEAVER_CACHE_DIR`` and ``TOOLWEAVER_CACHE_PREFIX``; ``overrides`` win over them."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"use_redis": False}  # REDIS_URL alone does not turn Redis on
        if "USE_REDIS" in env:
            values["use_redis"] = _parse_bool("USE_REDIS", env["USE_REDIS"])
        if env.get("REDIS_URL"):
            values["redis_url"] = env["REDIS_URL"]
        if env.get("REDIS_PASSWORD"):
            values["redis_password"] = env["REDIS_PASSWORD"]
        if env.get("TOOLWEAVER_CACHE_DIR"):
            values["cache_dir"] = Path(env["TOOLWEAVER_CACHE_DIR"])
        if env.get("TOOLWEAVER_CACHE_PREFIX"):
            values["key_prefix"] = env["TOOLWEAVER_CACHE_PREFIX"]
        if env.get("TOOLWEAVER_STATS_FILE"):
            values["stats_file"] = Path(env["TOOLWEAVER_STATS_FILE"])
        _check_field_names(cls, overrides)
        if "redis_url" in overrides and "use_redis" not in overrides:
            values.pop("use_redis")  # an explicit URL turns Redis on (see __post_init__)
        values.update(overrides)
        return cls(**values)


# ToolWeaver's RedisCache arguments, and where they went
_TOOLWEAVER_NAMES = {
    "password": "redis_password",
    "pool_size": "redis_pool_size",
    "enable_fallback": "stores (leave 'file' out to disable the file fallback)",
    "ssl": "a rediss:// redis_url",
}


def _check_field_names(cls: type[CacheConfig], values: Mapping[str, Any]) -> None:
    known = {f.name for f in fields(cls)}
    bad = sorted(set(values) - known)
    if not bad:
        return
    hints = [f"{name} -> {_TOOLWEAVER_NAMES[name]}" for name in bad if name in _TOOLWEAVER_NAMES]
    hint = (
        f" (ToolWeaver's names: {'; '.join(hints)}; or use toolweaver_async.compat.RedisCache)"
        if hints
        else ""
    )
    raise ConfigError(f"unknown CacheConfig fields: {', '.join(bad)}{hint}")


def check_name(name: object, *, what: str) -> str:
    """Namespaces and prefixes appear in Redis keys and folder names: keep them plain. The
    whole string must match; a ``str`` subclass comes back as a plain ``str``."""
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name) or name in {".", ".."}:
        shown = reprlib.repr(name)  # bounded: the value may be huge or nested
        raise ConfigError(
            f"{what} must be 1-64 characters of letters, digits, '_', '.', '-'; got {shown}"
        )
    return name if type(name) is str else str.__str__(name)


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")
