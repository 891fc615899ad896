"""docs/migrating-from-toolweaver.md: every Python block runs as written against a real Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests._doc_blocks import python_blocks, run_block
from toolweaver_async.testing import RedisServer

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "migrating-from-toolweaver.md"
BLOCKS = python_blocks(GUIDE)


def test_the_guide_has_runnable_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.slow  # a Python process per block (a pytest run for test blocks)
@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_guide_example_runs(
    line: int, code: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {
        "REDIS_URL": redis_server.url,
        "TOOLWEAVER_CACHE_DIR": str(tmp_path / "cache"),
        "TOOLWEAVER_CACHE_PREFIX": "guide" + uuid.uuid4().hex[:8],
    }
    result = run_block(code, cwd=tmp_path, env=env)
    assert result.returncode == 0, f"block at line {line} failed:\n{result.stdout}{result.stderr}"
