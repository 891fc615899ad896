"""Command line: ``python -m toolweaver_async {demo,doctor,inspect,keys,stats,clear,bench}``.

Every command builds its cache with ``AsyncToolCache.from_env()``, so it sees exactly what an
agent configured by the same environment sees (its counters stay out of the stats file). Bad
input (environment, arguments) ends with one line on stderr and exit status 2, never a
traceback. A command is one decorated coroutine function: ``@command(name, help, arguments)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import msgspec

from .cache import AsyncToolCache
from .config import CacheConfig, check_name
from .errors import CacheError, ConfigError, StoreError
from .stats_file import read_stats_file
from .stores.worker_lane import in_daemon_thread

__all__ = ["main"]

PROG = "toolweaver-async"


def _json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value, enc_hook=repr), indent=2).decode()


def _cache(**overrides: Any) -> AsyncToolCache:
    """The environment's cache; its counters stay out of the stats file (a look with the
    command line is not a run of the agent)."""
    return AsyncToolCache.from_env(stats_file=None, **overrides)


T = TypeVar("T")


async def _on_disk(what: str, config: CacheConfig, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` (file I/O) on a daemon thread, waited for at most ``file_timeout``: a hung
    disk or dead mount fails the command with a clear error instead of hanging it, and the
    stuck thread never keeps the process from exiting (``asyncio.to_thread`` would: the
    default executor is joined when ``asyncio.run`` ends)."""
    try:
        async with asyncio.timeout(config.file_timeout):
            return await in_daemon_thread(f"toolweaver-async cli: {what}", fn, *args)
    except TimeoutError:
        raise StoreError(
            f"{what}: no answer from the disk within file_timeout={config.file_timeout} s "
            "(a hung disk or network mount?)",
            store="file",
        ) from None


def _savings(config: CacheConfig) -> dict[str, Any]:
    """What the runs recorded in the stats file saved, for ``stats`` and ``doctor``."""
    if config.stats_file is None:
        return {
            "stats_file": None,
            "note": "set TOOLWEAVER_STATS_FILE (or CacheConfig.stats_file) and every cache "
            "adds its counters to that file when it closes",
        }
    runs, totals = read_stats_file(config.stats_file)
    overall = totals.overall
    return {
        "stats_file": str(config.stats_file),
        "runs": runs,
        "hits": overall.total_hits,
        "hit_rate": overall.hit_rate,
        "loader_calls": overall.loader_calls,
        "saved_seconds": overall.saved_seconds,
        "saved_cost": overall.saved_cost,
    }


# -- argument types: a bad value is one line and exit 2, from argparse itself ----------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _namespace(text: str) -> str:
    try:
        return check_name(text, what="namespace")
    except CacheError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- the command table ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


COMMANDS: dict[str, Command] = {}


def command(
    name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None
) -> Callable[[Callable[[argparse.Namespace], Coroutine[Any, Any, int]]], Any]:
    """Register ``run(args) -> exit status`` as the subcommand ``name``."""

    def register(run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Any:
        COMMANDS[name] = Command(name, help, run, arguments)
        return run

    return register


# -- commands -----------------------------------------------------------------------------
@command("doctor", "health of every store (exit 1 when one is down), and savings so far")
async def _doctor(_: argparse.Namespace) -> int:
    async with _cache() as cache:
        report = await cache.health_check()
    config = CacheConfig.from_env()
    report["savings"] = await _on_disk("reading the stats file", config, _savings, config)
    print(_json(report))
    return 0 if all(store["ok"] for store in report["stores"].values()) else 1


def _inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key")
    parser.add_argument("--namespace", type=_namespace, default="default")


@command("inspect", "print the cached value of a key", _inspect_arguments)
async def _inspect(args: argparse.Namespace) -> int:
    async with _cache() as cache:
        missing = object()
        value = await cache.get(args.key, namespace=args.namespace, default=missing)
        answered = {n: c for n, c in cache.stats().overall.hits.items() if c}
    if value is missing:
        print(f"miss: {args.namespace}/{args.key}", file=sys.stderr)
        return 1
    print(f"# {args.namespace}/{args.key} from {', '.join(answered) or '?'}", file=sys.stderr)
    print(_json(value))
    return 0


def _keys_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", type=_namespace, default="default")
    parser.add_argument("--prefix", default="", help="only keys that start with this text")


@command("keys", "list the keys of fresh entries, one a line", _keys_arguments)
async def _keys(args: argparse.Namespace) -> int:
    """One key a line, streamed as the stores hand them over."""
    async with _cache() as cache:
        async for key in cache.keys(namespace=args.namespace, prefix=args.prefix):
            print(key)
    return 0


@command("stats", "what every recorded run hit, loaded and saved (JSON; TOOLWEAVER_STATS_FILE)")
async def _stats(_: argparse.Namespace) -> int:
    config = CacheConfig.from_env()
    if config.stats_file is None:
        raise ConfigError(
            "no stats file: set TOOLWEAVER_STATS_FILE, and every cache adds its counters to it "
            "when it closes"
        )
    # The stats file is read off the loop, with a bound (see _on_disk).
    if not await _on_disk("looking for the stats file", config, config.stats_file.exists):
        print(f"no run recorded in {config.stats_file} yet", file=sys.stderr)
        return 1
    runs, totals = await _on_disk(
        "reading the stats file", config, read_stats_file, config.stats_file
    )
    print(_json({"stats_file": str(config.stats_file), "runs": runs, **totals.to_dict()}))
    return 0


def _clear_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", type=_namespace)
    parser.add_argument("--yes", action="store_true", help="really remove them")


@command("clear", "remove this prefix's entries (or one namespace)", _clear_arguments)
async def _clear(args: argparse.Namespace) -> int:
    """Says what was removed where, and what waits for an unreachable Redis: queued in the
    outage journal (replayed when it answers) or, without a file store to keep the journal,
    not done there at all (exit 1)."""
    if not args.yes:
        target = f"namespace {args.namespace!r}" if args.namespace else "every entry"
        print(f"refusing to remove {target} without --yes", file=sys.stderr)
        return 2
    async with _cache() as cache:
        what = f"namespace {args.namespace!r}" if args.namespace else "every entry"
        if args.namespace:
            await cache.invalidate(args.namespace)
        else:
            await cache.clear()
        report = await cache.health_check()
    prefix = cache.config.key_prefix
    done = [name for name, store in report["stores"].items() if store["ok"]]
    status = 0
    print(f"removed {what} of prefix {prefix!r} from {', '.join(done) or 'no store'}")
    for name, store in report["stores"].items():
        if store["ok"]:
            continue
        journal = store.get("journal") or {}
        if journal.get("path"):
            print(
                f"{name} is unreachable ({store['error']}): the removal is queued in its outage "
                f"journal ({journal['path']}) and runs when {name} answers again"
            )
        else:
            print(
                f"{name} is unreachable ({store['error']}): NOT removed there, and nothing "
                "keeps the request (no file store in the chain): run clear again when it is back"
            )
            status = 1
    return status


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=_positive_int, default=2000, help="sets and gets (>= 1)")


@contextlib.asynccontextmanager
async def _scratch_folder(prefix: str) -> AsyncIterator[str]:
    """A temporary folder made and removed off the loop, with a bound (see _on_disk)."""
    config = CacheConfig.from_env()
    folder = await _on_disk("making a temporary folder", config, tempfile.mkdtemp, "", prefix)
    try:
        yield folder
    finally:
        await _on_disk("removing the temporary folder", config, shutil.rmtree, folder, True)


@command("bench", "quick set/get latency of the configured chain", _bench_arguments)
async def _bench(args: argparse.Namespace) -> int:
    """A quick latency check of the configured chain (the full suite is ``make bench``), in a
    temporary folder and under a prefix of its own, both removed afterwards."""
    value = {"tool": "search", "results": [{"id": i, "score": i / 10} for i in range(20)]}
    async with (
        _scratch_folder("tw-bench-") as scratch,
        _cache(key_prefix=f"bench-{uuid.uuid4().hex[:8]}", cache_dir=scratch) as cache,
    ):
        sets, gets = [], []
        for i in range(args.n):
            started = time.perf_counter()
            await cache.set(f"k{i % 100}", value)
            sets.append(time.perf_counter() - started)
            started = time.perf_counter()
            await cache.get(f"k{i % 100}")
            gets.append(time.perf_counter() - started)
        await cache.clear()
    chain = " + ".join(cache.config.enabled_stores)
    print(f"chain: {chain}; {args.n} sets and gets of a ~1 KB value")
    print(f"set p50 {statistics.median(sets) * 1e6:8.1f} µs")
    print(f"get p50 {statistics.median(gets) * 1e6:8.1f} µs")
    return 0


@command("demo", "a miss and a hit, with timings")
async def _demo(_: argparse.Namespace) -> int:
    async def slow_tool(query: str) -> dict[str, Any]:
        await asyncio.sleep(0.2)
        return {"query": query, "answer": 42}

    async with (
        _scratch_folder("tw-demo-") as scratch,
        _cache(key_prefix=f"demo-{uuid.uuid4().hex[:8]}", cache_dir=scratch) as cache,
    ):
        for attempt in ("first call (miss)", "second call (hit)"):
            started = time.perf_counter()
            await cache.get_or_set("q:answer", lambda: slow_tool("answer"), namespace="results")
            print(f"{attempt:<18} {(time.perf_counter() - started) * 1000:8.2f} ms")
        print(_json(cache.stats().overall.to_dict()))
        await cache.clear()
    return 0


# -- entry point --------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (argparse prints the whole usage first by default)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog=PROG,
        description="Look into and manage the cache your agent's environment configures "
        "(USE_REDIS, REDIS_URL, TOOLWEAVER_CACHE_DIR, TOOLWEAVER_CACHE_PREFIX, "
        "TOOLWEAVER_STATS_FILE).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="show the traceback of an unexpected error"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in COMMANDS.values():
        sub = commands.add_parser(entry.name, help=entry.help, description=entry.help)
        if entry.arguments is not None:
            entry.arguments(sub)
    return parser


def _root_cause(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups (task groups)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m toolweaver_async`` and the ``toolweaver-async`` script."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return done.code if isinstance(done.code, int) else 2
    try:
        return asyncio.run(COMMANDS[args.command].run(args))
    except KeyboardInterrupt:
        return 130
    except Exception as raised:
        exc = _root_cause(raised)
        if isinstance(exc, CacheError | ValueError):  # the configuration or an argument
            print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        if args.traceback:
            raise
        print(
            f"{PROG}: unexpected {type(exc).__name__}: {exc} (--traceback shows where)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
