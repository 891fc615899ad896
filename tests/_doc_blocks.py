"""Python blocks of a Markdown file, run as a user would paste them: each in its own process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)


def python_blocks(markdown: Path) -> list[tuple[int, str]]:
    """``(line number, code)`` of every ```python block, indentation (list items) removed."""
    text = markdown.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((line, textwrap.dedent(match.group("body"))))
    return blocks


def run_block(code: str, *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as ``python -`` in ``cwd`` with exactly ``env`` (plus PATH and HOME)."""
    full_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "PYTHONUNBUFFERED": "1"}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-"],
        input=code,
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
