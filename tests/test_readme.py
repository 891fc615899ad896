"""Every Python block of the README runs as written, the way a user pastes it: scripts as their
own process, test blocks under pytest (the plugin's fixtures, pytest-asyncio's strict mode).

Blocks see a real Redis through ``REDIS_URL`` (``USE_REDIS`` left to its default) and a cache
folder inside the test's temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests._doc_blocks import python_blocks, run_block
from toolweaver_async.testing import RedisServer

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = python_blocks(README)


def _environment(redis_server: RedisServer, folder: Path) -> dict[str, str]:
    return {
        "REDIS_URL": redis_server.url,
        "TOOLWEAVER_CACHE_DIR": str(folder / "cache"),
        "TOOLWEAVER_CACHE_PREFIX": "readme" + uuid.uuid4().hex[:8],
    }


def test_first_screen_shows_an_async_main_a_user_can_paste() -> None:
    line, code = BLOCKS[0]
    assert line < 40
    assert "async def main()" in code
    assert code.rstrip().endswith("asyncio.run(main())")


@pytest.mark.slow  # a Python process per block (a pytest run for test blocks)
@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_block_runs_as_written(
    line: int, code: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = _environment(redis_server, tmp_path)
    if "def test_" in code:
        (tmp_path / "test_from_readme.py").write_text(code)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_from_readme.py"],
            cwd=tmp_path,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"README line {line}:\n{result.stdout}{result.stderr}"
        assert " passed" in result.stdout
        return
    result = run_block(code, cwd=tmp_path, env=env)
    assert result.returncode == 0, f"README line {line}:\n{result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr
