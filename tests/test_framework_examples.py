"""The framework examples run to the end, with USE_REDIS=false and true, fake models only,
and show the cache answering the repeated call. They clear what they wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

CASES = {
    "langchain_llm_cache.py": ("langchain_classic", ["same call again", "embeddings cached"]),
    "langgraph_node_cache.py": ("langgraph", ["the node ran 2 times for 3 invocations"]),
    "mcp_response_cache.py": ("mcp.client.caching", ["asked for its tools 1 time(s)"]),
    "llama_index_ingestion_cache.py": ("llama_index.core", ["same documents"]),
}


# Each example imports its framework in a fresh process (seconds apiece): every one runs on
# the full chain, and one on the embedded default too, to keep CI well under its budget.
RUNS = [(name, "true") for name in CASES] + [("langgraph_node_cache.py", "false")]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "use_redis"), RUNS)
def test_framework_example_runs_and_serves_the_repeat_from_the_cache(
    name: str, use_redis: str, tmp_path: Path, redis_url: str
) -> None:
    module, expected = CASES[name]
    pytest.importorskip(module)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "TOOLWEAVER_"))}
    env.update(
        USE_REDIS=use_redis,
        REDIS_URL=redis_url,
        TOOLWEAVER_CACHE_DIR=str(tmp_path),
        PYTHONUNBUFFERED="1",
    )
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    chain = "memory + redis + file" if use_redis == "true" else "memory + file"
    assert f"chain: {chain}" in done.stdout
    for text in expected:
        assert text in done.stdout, done.stdout
    entries = [p for p in tmp_path.rglob("*") if p.is_file() and "~journal" not in p.parts]
    assert entries == []
