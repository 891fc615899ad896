"""The command line on bad input: one line on stderr, exit 2, never a traceback; --version;
clear says what happened where; demo and bench leave nothing on disk; tests stay out of $HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from toolweaver_async import CacheConfig, __version__
from toolweaver_async.__main__ import main


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, cache_dir: Path, key_prefix: str) -> Path:
    for name in ("REDIS_URL", "REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USE_REDIS", "false")
    monkeypatch.setenv("TOOLWEAVER_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("TOOLWEAVER_CACHE_PREFIX", key_prefix)
    return cache_dir


BAD_INPUTS = [
    pytest.param({"USE_REDIS": "true", "REDIS_URL": "http://x"}, ["doctor"], id="http-url"),
    pytest.param({"USE_REDIS": "maybe"}, ["doctor"], id="use-redis-maybe"),
    pytest.param({"USE_REDIS": "true", "REDIS_URL": "redis://h:99999999/0"}, ["doctor"], id="port"),
    pytest.param({"TOOLWEAVER_CACHE_PREFIX": "a b"}, ["doctor"], id="bad-prefix"),
    pytest.param({}, ["inspect", "k", "--namespace", "a/b"], id="bad-namespace"),
    pytest.param({}, ["keys", "--namespace", ".."], id="bad-namespace-keys"),
    pytest.param({}, ["clear", "--yes", "--namespace", ""], id="empty-namespace"),
    pytest.param({}, ["bench", "-n", "0"], id="bench-n-0"),
    pytest.param({}, ["bench", "-n", "many"], id="bench-n-text"),
    pytest.param({}, ["nope"], id="unknown-command"),
    pytest.param({}, [], id="no-command"),
]


@pytest.mark.parametrize(("environ", "argv"), BAD_INPUTS)
def test_bad_input_is_one_line_on_stderr_and_exit_2(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    environ: dict[str, str],
    argv: list[str],
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("toolweaver-async")
    assert "error" in lines[0]
    assert "Traceback" not in captured.err


def test_bad_environment_from_the_script_shows_no_traceback(tmp_path: Path) -> None:
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "USE_REDIS": "true",
        "REDIS_URL": "http://x",
        "TOOLWEAVER_CACHE_DIR": str(tmp_path / "cache"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "toolweaver_async", "doctor"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"toolweaver-async {__version__}"


def test_clear_says_what_it_removed(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["clear", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "removed every entry of prefix" in out
    assert "memory, file" in out


def test_clear_with_redis_down_says_the_redis_part_is_queued(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    free_port: Callable[[], int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("USE_REDIS", "true")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["clear", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "from memory, file" in out
    assert "redis is unreachable" in out
    assert "queued in its outage journal" in out


def test_clear_with_redis_down_and_no_file_store_says_nothing_was_kept(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    free_port: Callable[[], int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    original = CacheConfig.from_env

    def without_file(environ: object = None, **overrides: object) -> CacheConfig:
        return original(None, stores=("memory", "redis"), **overrides)  # type: ignore[arg-type]

    monkeypatch.setattr(CacheConfig, "from_env", without_file)
    monkeypatch.setenv("USE_REDIS", "true")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["clear", "--yes"]) == 1
    out = capsys.readouterr().out
    assert "NOT removed there" in out


@pytest.mark.parametrize("argv", [["demo"], ["bench", "-n", "20"]], ids=["demo", "bench"])
def test_demo_and_bench_leave_nothing_on_disk(
    env: Path,
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    assert main(argv) == 0
    capsys.readouterr()
    assert not env.exists(), list(env.rglob("*"))
    assert list(scratch.iterdir()) == []


def test_tests_never_use_a_cache_folder_under_home() -> None:
    home = Path.home().resolve()
    assert not CacheConfig().cache_dir.resolve().is_relative_to(home)
    assert not CacheConfig.from_env().cache_dir.resolve().is_relative_to(home)
