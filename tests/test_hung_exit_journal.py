"""A disk step of the outage journal or of the stats file hung on a dead mount (a FIFO in place
of the file stands in for it) releases its callers, and neither it nor ``aclose()`` keeps the
interpreter from exiting: a real subprocess must exit within a deadline while the step is stuck."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from .test_hung_exit import run_until_exit

pytestmark = pytest.mark.slow  # a Python process per test, ~1 s each

JOURNAL_SCRIPT = textwrap.dedent(
    """
    import asyncio, glob, os, sys, time
    from toolweaver_async import AsyncToolCache, CacheConfig

    async def main(root, port):
        config = CacheConfig(
            cache_dir=root,
            stores=("redis", "file"),
            redis_url=f"redis://127.0.0.1:{port}/0",  # nothing listens: every write journaled
            file_timeout=0.3,
        )
        async with AsyncToolCache(config) as cache:
            await cache.set("k", "v")
        logs = glob.glob(os.path.join(root, "~journal", "**", "*.jrnl"), recursive=True)
        assert logs, "the first run left no journal log"
        for log in logs:
            os.unlink(log)
            os.mkfifo(log)  # open() blocks: a dead mount
        started = time.monotonic()
        cache = AsyncToolCache(config)
        await cache.connect()  # claiming the log hangs: released after file_timeout
        await cache.set("k2", "v2")
        await cache.aclose()
        assert time.monotonic() - started < 5
        print("released", flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)

STATS_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from toolweaver_async import AsyncToolCache, CacheConfig

    async def main(root, stats):
        os.mkfifo(stats)  # reading the stats file blocks: a dead mount
        config = CacheConfig(
            cache_dir=root, stores=("memory",), stats_file=stats, file_timeout=0.3
        )
        started = time.monotonic()
        async with AsyncToolCache(config) as cache:
            await cache.set("k", "v")
        assert time.monotonic() - started < 5
        print("released", flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_the_interpreter_exits_while_a_journal_step_is_hung(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    root = tmp_path / "cache"
    run_until_exit([JOURNAL_SCRIPT, str(root), str(free_port())], root)


def test_the_interpreter_exits_while_writing_the_stats_file_is_hung(tmp_path: Path) -> None:
    run_until_exit([STATS_SCRIPT, str(tmp_path / "cache"), str(tmp_path / "stats")], tmp_path)
