"""Another process's view of a shared ``cache_dir``: a fresh file-only cache that holds none of
the writer's missed-writes marks, reading or writing once (multi-process file tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from queue import Queue
from typing import Any

from toolweaver_async import AsyncToolCache, CacheConfig

NS = "default"


def read(cache_dir: Path, key_prefix: str, keys: list[str], namespace: str = NS) -> dict[str, Any]:
    """What this process (another one than the writer, with no marks) reads from the folder."""

    async def get_many() -> dict[str, Any]:
        config = CacheConfig(stores=("file",), cache_dir=cache_dir, key_prefix=key_prefix)
        async with AsyncToolCache(config) as reader:
            return await reader.get_many(keys, namespace=namespace)

    return asyncio.run(get_many())


def write(cache_dir: Path, key_prefix: str, key: str, value: str) -> None:
    """Write ``key`` through to the folder from this process."""

    async def set_it() -> None:
        config = CacheConfig(
            stores=("file",), cache_dir=cache_dir, key_prefix=key_prefix, file_write_behind=False
        )
        async with AsyncToolCache(config) as other:
            await other.set(key, value)

    asyncio.run(set_it())


async def serve_commands(
    commands: Queue[Any],
    answers: Queue[Any],
    handle: Callable[[str, list[Any]], Awaitable[Any]],
) -> None:
    """In a test's helper process: answer each ``(command, *args)`` with what ``handle``
    returns, an exception as ``("error", repr)`` (told to the test instead of hanging it),
    until ``"stop"``."""
    while True:
        command, *args = await asyncio.to_thread(commands.get, True, 60)
        if command == "stop":
            answers.put("stopped")
            return
        try:
            answers.put(await handle(command, args))
        except Exception as exc:
            answers.put(("error", repr(exc)))
