"""The outage journal drains while agents keep rewriting its keys, on a real redis-server.

Once Redis is back, a write of a journaled key goes straight to Redis instead of being journaled
again behind the replay; before, agents that kept rewriting the same keys kept the journal full
(each replayed batch was replaced while on the wire) and other processes read the values from
before the outage for as long as they kept writing.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache, BreakerSettings, BreakerState, CacheConfig
from toolweaver_async.testing import RedisServer

from . import _replay_processes
from .polling import eventually
from .tcp_proxy import TcpProxy
from .test_failover import redis_layer

pytestmark = pytest.mark.slow  # another process is spawned (~1 s)

KEYS = [f"k{n}" for n in range(200)]
WRITERS = 4


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[TcpProxy]:
    async with TcpProxy(redis_server.port) as started:
        yield started


@pytest.fixture
async def cache(cache_dir: Path, key_prefix: str, proxy: TcpProxy) -> AsyncIterator[AsyncToolCache]:
    config = CacheConfig(
        use_redis=True,
        redis_url=proxy.url,
        cache_dir=cache_dir,
        key_prefix=key_prefix,
        stores=("redis",),  # every write goes to Redis or to its journal
        # Roomy deadlines: this test is about draining, and a loaded CI box must not fail the
        # probes after the heal (the agents' journaled writes keep this loop busy).
        redis_command_timeout=0.5,
        redis_connect_timeout=0.5,
        breaker=BreakerSettings(
            failure_threshold=3, recovery_timeout=0.05, max_recovery_timeout=0.2
        ),
    )
    async with AsyncToolCache(config) as made:
        yield made


def read_in_another_process(
    redis_url: str, key_prefix: str, cache_dir: Path, keys: list[str] = KEYS
) -> Awaitable[dict[str, Any]]:
    """What a spawned process reads from Redis alone for ``keys`` (off the event loop)."""

    def run() -> dict[str, Any]:
        spawn = multiprocessing.get_context("spawn")
        results = spawn.Queue()
        reader = spawn.Process(
            target=_replay_processes.read_from_redis,
            args=(redis_url, key_prefix, cache_dir, keys, results),
        )
        reader.start()
        try:
            found: dict[str, Any] = results.get(timeout=30)
        finally:
            reader.join(timeout=10)
            if reader.is_alive():
                reader.kill()
        assert reader.exitcode == 0
        return found

    return asyncio.to_thread(run)


async def test_the_journal_drains_while_agents_keep_rewriting_its_keys(
    cache: AsyncToolCache, proxy: TcpProxy, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    layer = redis_layer(cache)
    await cache.set_many(dict.fromkeys(KEYS, 0))  # what Redis holds before the outage
    proxy.refuse = True
    proxy.reset_all()
    for key in KEYS:
        await cache.set(key, 1)  # the first few fail, the breaker opens, the rest are journaled
    journal = layer.journal
    assert journal is not None
    assert len(journal) == len(KEYS)

    latest = dict.fromkeys(KEYS, 1)
    stop = asyncio.Event()

    async def agent(keys: list[str]) -> None:
        version = 1
        while not stop.is_set():
            version += 1
            for key in keys:
                await cache.set(key, version)
                latest[key] = version
            await asyncio.sleep(0)  # a journaled write does no I/O: let the replay run

    agents = [asyncio.ensure_future(agent(KEYS[n::WRITERS])) for n in range(WRITERS)]
    try:
        proxy.refuse = False  # Redis is back; the agents keep writing the same keys
        await eventually(
            lambda: layer.breaker.state is BreakerState.CLOSED and not journal,
            within=15,
            what="the journal drained under sustained writes",
        )
    finally:
        stop.set()
        await asyncio.gather(*agents)
    assert not journal
    # Another process, reading Redis alone, finds the newest value of every key.
    found = await read_in_another_process(redis_url, key_prefix, tmp_path / "elsewhere")
    assert found == latest
