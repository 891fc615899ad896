"""A file step hung on a dead mount (a FIFO in place of an entry file stands in for it)
releases its callers, and neither it nor ``aclose()`` keeps the interpreter from exiting: a
real subprocess must exit within a deadline while its worker thread is still stuck."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, hashlib, os, sys, time
    from toolweaver_async import AsyncToolCache, CacheConfig

    async def main(root):
        config = CacheConfig(cache_dir=root, stores=("memory", "file"), file_timeout=0.2)
        async with AsyncToolCache(config) as cache:
            await cache.set("hung", "v")
            await cache.set("hung-too", "v")
        digest = hashlib.blake2b(b"hung", digest_size=20).hexdigest()
        entry = os.path.join(root, "tw", "default", digest[:2], digest)
        os.unlink(entry)
        os.mkfifo(entry)  # open() blocks: a dead mount
        cache = AsyncToolCache(config)
        await cache.connect()
        started = time.monotonic()
        assert await cache.get("hung") is None  # released after file_timeout
        await cache.invalidate("other")  # a long step on its own thread: fine
        assert time.monotonic() - started < 5
        await cache.aclose()
        print("released", flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


def test_the_interpreter_exits_while_a_file_step_is_still_hung(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    run_until_exit([SCRIPT, str(root)], root)


def run_until_exit(args: list[str], root: Path) -> None:
    """Run ``python -c *args``; it must exit on its own, cleanly, having printed "released".
    Whatever FIFOs under ``root`` still hold a thread are opened afterwards to let it go."""
    child = subprocess.Popen(
        [sys.executable, "-c", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = child.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        raise AssertionError(f"the process did not exit: {out!r} {err[-2000:]!r}") from None
    finally:
        _release_fifos(root)
    assert child.returncode == 0, err[-2000:]
    assert "released" in out


def _release_fifos(root: Path) -> None:
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
