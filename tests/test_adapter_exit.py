"""Adapters used from sync code and never closed leave nothing that keeps Python running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
from langchain_core.outputs import Generation
from toolweaver_async import AsyncToolCache, CacheConfig
from toolweaver_async.integrations.langchain import ToolWeaverLLMCache
from toolweaver_async.integrations.langgraph import ToolWeaverNodeCache
from toolweaver_async.integrations.llama_index import ToolWeaverKVStore

cache = AsyncToolCache(CacheConfig(cache_dir={folder!r}, key_prefix={prefix!r},
                                   redis_url={url!r}, use_redis=True))  # never opened or closed
llm = ToolWeaverLLMCache(cache)
llm.update("p", "m", [Generation(text="x")])
nodes = ToolWeaverNodeCache(cache)
nodes.set({{(("ns",), "k"): ([1], None)}})
kv = ToolWeaverKVStore(cache)
kv.put("k", {{"v": 1}})
print(llm.lookup("p", "m")[0].text, nodes.get([(("ns",), "k")]), kv.get("k"))
"""


@pytest.mark.slow
def test_interpreter_exits_after_sync_adapter_calls_without_any_close(
    tmp_path: Path, key_prefix: str, redis_url: str
) -> None:
    pytest.importorskip("langgraph")
    pytest.importorskip("llama_index.core")
    script = SCRIPT.format(folder=str(tmp_path), prefix=key_prefix, url=redis_url)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["x", "{(('ns',),", "'k'):", "[1]}", "{'v':", "1}"]
