"""The pytest plugin, as a user's test suite sees it: run with ``pytester`` in pytest-asyncio's
auto and strict modes, with no import in conftest.py and a hostile environment."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import os
import pytest
import redis.asyncio as aioredis

{mark}
async def test_cache_is_memory_and_file_in_a_temporary_folder(toolweaver_cache, tmp_path):
    assert toolweaver_cache.config.enabled_stores == ("memory", "file")
    assert toolweaver_cache.config.cache_dir.is_relative_to(tmp_path)
    assert toolweaver_cache.config.key_prefix.startswith("twt")
    await toolweaver_cache.set("k", {{"v": 1}})
    assert await toolweaver_cache.get("k") == {{"v": 1}}
    assert any(p.is_file() for p in tmp_path.rglob("*"))  # the file store wrote there

{mark}
async def test_clock_advance_expires_entries(toolweaver_cache, toolweaver_clock):
    await toolweaver_cache.set("k", 1, ttl=10)
    toolweaver_clock.advance(9)
    assert await toolweaver_cache.get("k") == 1
    toolweaver_clock.advance(2)
    assert await toolweaver_cache.get("k") is None

{mark}
async def test_each_test_gets_its_own_prefix(toolweaver_cache):
    assert await toolweaver_cache.get("k") is None

{mark}
async def test_redis_cache_writes_to_the_real_server(toolweaver_redis_cache, toolweaver_redis):
    assert toolweaver_redis.url.startswith("redis://127.0.0.1:")
    assert toolweaver_redis_cache.config.enabled_stores == ("memory", "redis", "file")
    await toolweaver_redis_cache.set("k", 1)
    raw = aioredis.Redis.from_url(toolweaver_redis.url)
    prefix = toolweaver_redis_cache.config.key_prefix
    assert [k async for k in raw.scan_iter(prefix + ":*")]
    await raw.aclose()

{mark}
async def test_redis_paused_then_resumed(toolweaver_redis_cache, toolweaver_redis):
    await toolweaver_redis_cache.set("k", 1)
    toolweaver_redis.pause()
    assert await toolweaver_redis_cache.get("k") == 1  # memory answers
    toolweaver_redis.resume()

def test_kill_leaves_the_server_dead_for_this_test_only(toolweaver_redis):
    toolweaver_redis.kill()
    assert not toolweaver_redis.running

def test_the_next_test_gets_it_running_again(toolweaver_redis):
    assert toolweaver_redis.running

def test_pause_and_leave_it_paused(toolweaver_redis):
    toolweaver_redis.pause()

{mark}
async def test_after_a_pause_the_server_answers(toolweaver_redis):
    raw = aioredis.Redis.from_url(toolweaver_redis.url, socket_timeout=2)
    assert await raw.ping()
    await raw.aclose()

def test_restart_keeps_the_url(toolweaver_redis):
    url = toolweaver_redis.url
    toolweaver_redis.restart()
    assert toolweaver_redis.url == url and toolweaver_redis.running
"""

HOSTILE_ENV = {
    "USE_REDIS": "true",
    "REDIS_URL": "http://not-a-redis-url",
    "TOOLWEAVER_CACHE_DIR": "/nonexistent/should-not-be-used",
    "TOOLWEAVER_CACHE_PREFIX": "shared",
}


@pytest.mark.slow  # a pytest run and a redis-server of its own: about 4 s
@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_plugin_fixtures_work_in_both_asyncio_modes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    for name, value in HOSTILE_ENV.items():
        monkeypatch.setenv(name, value)
    mark = "@pytest.mark.asyncio" if mode == "strict" else ""
    pytester.makepyfile(test_agent=USER_TESTS.format(mark=mark))
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:cacheprovider", "-o", f"asyncio_mode={mode}", "-q"
    )
    result.assert_outcomes(passed=10)


def test_plugin_is_loaded_by_its_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fixtures")
    assert result.ret == 0
    for name in ("toolweaver_redis", "toolweaver_cache", "toolweaver_redis_cache"):
        result.stdout.fnmatch_lines([f"{name}*"])
    result.stdout.fnmatch_lines(["toolweaver_clock*"])
