"""A write or delete the file store missed leaves no older value for another live process.

This process's missed-writes marks keep it from serving the key's older entry; another process
sharing the folder has no such mark. So the store itself withdraws the older entry when a write
or delete fails: removed while it is still that very file, else expired in place, and never an
entry another process wrote meanwhile. Real separate processes (spawned), real refusals: a
file-size limit (the kernel answers EFBIG, as for a full disk) and a folder made unwritable
(chmod, or the immutable flag when running as root).
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.synchronize import Event
from pathlib import Path
from queue import Queue
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache, CacheConfig

from ._folder_clients import read, serve_commands, write

NS = "default"
BIG = "big" * 20_000  # ~60 KB encoded: over the writer's file-size limit
HOLD = "hold-me:"  # a value starting so waits in the writer's write step once it is told "hold"
LIMIT = 16 * 1024
BULK = [f"bulk{n}" for n in range(150)]  # three steps of a set_many (64 rows a step)

# -- the writer: a separate process driven by commands ---------------------------------------


def writer(
    cache_dir: Path,
    key_prefix: str,
    write_behind: bool,
    file_timeout: float,
    commands: Queue[Any],
    answers: Queue[Any],
    paused: Event,
    go: Event,
) -> None:
    """A cache on ``cache_dir`` (file store only) doing what ``commands`` say, one answer each.
    Once told ``hold``, a write of a value starting with ``HOLD`` first waits for ``go``
    (having set ``paused``): another process can write in between, or the step can hang past
    the writer's ``file_timeout``."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG for the write, not death
    from toolweaver_async.stores import file_writes

    real = file_writes.write_new_file
    held: list[bool] = []

    def write_new_file(name: str, parts: Sequence[bytes], folder: int) -> None:
        if held and HOLD.encode() in parts[-1]:
            paused.set()
            go.wait(30)
        real(name, parts, folder)

    file_writes.write_new_file = write_new_file  # type: ignore[assignment]
    asyncio.run(_serve(cache_dir, key_prefix, write_behind, file_timeout, commands, answers, held))


async def _serve(
    cache_dir: Path,
    key_prefix: str,
    write_behind: bool,
    file_timeout: float,
    commands: Queue[Any],
    answers: Queue[Any],
    held: list[bool],
) -> None:
    import resource

    config = CacheConfig(
        stores=("file",),
        cache_dir=cache_dir,
        key_prefix=key_prefix,
        file_write_behind=write_behind,
        file_timeout=file_timeout,
    )
    async with AsyncToolCache(config) as cache:

        async def handle(command: str, args: list[Any]) -> Any:
            if command == "hold":
                held.append(True)
            elif command == "limit":
                _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
                resource.setrlimit(resource.RLIMIT_FSIZE, (args[0], hard))
            elif command == "settle":  # until the hung step has returned
                store: Any = next(s for s in cache._chain.stores if s.name == "file")
                while store._lane_here().stalled:
                    await asyncio.sleep(0.005)
            elif command == "get":
                namespace = args[1] if args[1:] else NS
                return await cache.get_many(args[0], namespace=namespace)
            elif command == "invalidate":
                await cache.invalidate(args[0])
            elif command == "clear":
                await cache.clear()
            else:
                await _write(cache, command, args)
            return None

        await serve_commands(commands, answers, handle)


async def _write(cache: AsyncToolCache, command: str, args: list[Any]) -> None:
    """A set, set_many or delete; with write-behind, returns once the queue has drained."""
    queue = cache.stats().write_queue
    done_before = queue.get("flushed", 0) + queue.get("failed", 0)
    if command == "set":
        await cache.set(args[0], args[1])
        count = 1
    elif command == "set_many":
        await cache.set_many(args[0], namespace=args[1] if args[1:] else NS)
        count = len(args[0])
    else:
        await cache.delete(args[0])
        return
    while cache.stats().write_queue:  # write-behind: wait until its flushes are done
        queue = cache.stats().write_queue
        if queue["entries"] == 0 and queue["flushed"] + queue["failed"] >= done_before + count:
            return
        await asyncio.sleep(0.002)


class Writer:
    """The test's handle on the writer process."""

    def __init__(
        self, cache_dir: Path, key_prefix: str, write_behind: bool, file_timeout: float
    ) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.commands: Queue[Any] = spawn.Queue()
        self.answers: Queue[Any] = spawn.Queue()
        self.paused = spawn.Event()
        self.go = spawn.Event()
        self.process = spawn.Process(
            target=writer,
            args=(
                cache_dir,
                key_prefix,
                write_behind,
                file_timeout,
                self.commands,
                self.answers,
                self.paused,
                self.go,
            ),
        )
        self.process.start()

    def send(self, *command: Any) -> None:
        self.commands.put(command)

    def answer(self) -> Any:
        answer = self.answers.get(timeout=60)
        if isinstance(answer, tuple) and answer[:1] == ("error",):
            raise AssertionError(f"the writer failed: {answer[1]}")
        return answer

    def do(self, *command: Any) -> Any:
        self.send(*command)
        return self.answer()

    def stop(self) -> None:
        if self.process.is_alive():
            self.go.set()
            self.send("stop")
            self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(10)


@pytest.fixture
def start_writer(cache_dir: Path, key_prefix: str) -> Iterator[Callable[..., Writer]]:
    writers: list[Writer] = []

    def start(write_behind: bool, file_timeout: float = 30.0) -> Writer:
        # By default a paused write must not time out: the refusal is the subject.
        writers.append(Writer(cache_dir, key_prefix, write_behind, file_timeout))
        return writers[-1]

    yield start
    for each in writers:
        each.stop()


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], None]]:
    """Makes a folder unwritable (chmod, or chattr +i as root; root ignores modes): no file
    can be made, renamed or removed in it, while its files themselves stay writable."""
    undo: list[Callable[[], object]] = []

    def deny(folder: Path) -> None:
        if os.geteuid() != 0:
            folder.chmod(0o500)
            undo.append(lambda: folder.chmod(0o700))
            return
        made = _run("chattr", "+i", str(folder))
        if made.returncode != 0:
            pytest.skip(f"running as root and chattr +i is unavailable: {made.stderr}")
        undo.append(lambda: _run("chattr", "-i", str(folder)))

    yield deny
    for step in reversed(undo):
        step()


def entry_folder(cache_dir: Path, key_prefix: str, key: str) -> Path:
    digest = hashlib.blake2b(key.encode(), digest_size=20).hexdigest()
    return cache_dir / key_prefix / NS / digest[:2]


WAYS = [pytest.param(False, id="write_through"), pytest.param(True, id="write_behind")]

# -- the promise -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("write_behind", WAYS)
def test_writes_the_disk_refuses_leave_no_older_value_for_another_live_process(
    start_writer: Callable[..., Writer], cache_dir: Path, key_prefix: str, write_behind: bool
) -> None:
    """The writer stays alive (its marks are its own, not adopted): the other process reads
    the folder itself. A refused set withdraws the key's older entry; a set_many that a refused
    row ends withdraws that row's and every later row's (the steps after it never ran)."""
    writer = start_writer(write_behind)
    writer.do("set", "k", "v1")
    writer.do("set_many", dict.fromkeys(BULK, "v1"))
    writer.do("set", "other", "kept")
    assert read(cache_dir, key_prefix, ["k", "bulk99"]) == {"k": "v1", "bulk99": "v1"}

    writer.do("limit", LIMIT)
    writer.do("set", "k", BIG)
    bulk = dict.fromkeys(BULK, "v2")
    bulk["bulk10"] = BIG
    writer.do("set_many", bulk)

    seen = read(cache_dir, key_prefix, ["k", "other", *BULK])
    assert "k" not in seen  # never "v1"
    assert seen.pop("other") == "kept"
    assert "v1" not in seen.values(), sorted(k for k, v in seen.items() if v == "v1")
    assert set(seen.values()) <= {"v2"}
    # The writer itself: its marks hold back what it missed (behind the caller, only the
    # refused row was missed; through, the whole call failed and bulk11 was never written).
    mine = writer.do("get", ["k", "bulk10", "bulk11"])
    assert mine == ({"bulk11": "v2"} if write_behind else {})


@pytest.mark.slow
@pytest.mark.allow_blocking(reason="takes write permission away from entry folders")
@pytest.mark.parametrize("write_behind", WAYS)
def test_a_write_or_delete_a_read_only_folder_refuses_leaves_no_older_value_elsewhere(
    start_writer: Callable[..., Writer],
    cache_dir: Path,
    key_prefix: str,
    read_only: Callable[[Path], None],
    write_behind: bool,
) -> None:
    """The folder refuses unlinks and renames, so the older entries cannot be removed: they
    are expired in place (the files themselves still take a write), and no process serves
    them. Once the folder is writable again, a read removes them."""
    writer = start_writer(write_behind)
    writer.do("set_many", {"k": "v1", "gone": "v1", "other": "kept"})
    assert read(cache_dir, key_prefix, ["k", "gone"]) == {"k": "v1", "gone": "v1"}
    for key in ("k", "gone"):
        read_only(entry_folder(cache_dir, key_prefix, key))
    other_folder = entry_folder(cache_dir, key_prefix, "other")
    assert other_folder not in {entry_folder(cache_dir, key_prefix, k) for k in ("k", "gone")}

    writer.do("set", "k", "v2")
    writer.do("delete", "gone")

    assert read(cache_dir, key_prefix, ["k", "gone", "other"]) == {"other": "kept"}
    assert writer.do("get", ["k", "gone", "other"]) == {"other": "kept"}


@pytest.mark.slow
@pytest.mark.parametrize("write_behind", WAYS)
def test_a_refused_write_spares_a_newer_entry_another_process_wrote_meanwhile(
    start_writer: Callable[..., Writer], cache_dir: Path, key_prefix: str, write_behind: bool
) -> None:
    """Between the refused write looking at the key's entry and failing, another process
    writes the key: that entry is newer than the one the write was replacing, and stays."""
    writer = start_writer(write_behind)
    writer.do("set", "k", "v1")
    writer.do("limit", LIMIT)
    writer.do("hold")
    writer.send("set", "k", HOLD + BIG)
    assert writer.paused.wait(30), "the writer never reached its write"
    write(cache_dir, key_prefix, "k", "v3")
    writer.go.set()
    assert writer.answer() is None
    assert read(cache_dir, key_prefix, ["k"]) == {"k": "v3"}


@pytest.mark.slow
def test_a_write_hung_past_the_timeout_leaves_no_older_value_and_never_lands_late(
    start_writer: Callable[..., Writer], cache_dir: Path, key_prefix: str
) -> None:
    """The write step hangs (as on a lock or mount that answers nothing) and its caller is
    released after file_timeout: the older entry is withdrawn from another thread meanwhile,
    and the step, when it comes back, publishes nothing over what was written since."""
    writer = start_writer(False, file_timeout=1.0)
    writer.do("set_many", {"k": "v1", "later": "v1"})
    writer.do("hold")
    writer.do("set_many", {"k": HOLD + "v2", "later": "v2"})  # returns after ~1 s
    assert writer.paused.is_set()
    assert read(cache_dir, key_prefix, ["k", "later"]) == {}  # never "v1"
    write(cache_dir, key_prefix, "k", "v3")
    writer.go.set()
    writer.do("settle")
    assert read(cache_dir, key_prefix, ["k", "later"]) == {"k": "v3"}
    # The writer's own mark trusts only the bytes of the write it missed: a miss, never "v1".
    assert writer.do("get", ["k"]) == {}


@pytest.mark.slow
@pytest.mark.allow_blocking(reason="takes write permission away from the prefix folder")
def test_an_invalidate_or_clear_a_read_only_folder_refuses_leaves_nothing_to_serve_elsewhere(
    start_writer: Callable[..., Writer],
    cache_dir: Path,
    key_prefix: str,
    read_only: Callable[[Path], None],
) -> None:
    """The prefix folder refuses renames, so no namespace folder can be moved into the trash:
    the entries they hold are expired in place instead, and no process serves them."""
    writer = start_writer(False)
    writer.do("set_many", {"k": "v1", "j": "v1"})
    writer.do("set_many", {"k": "kept until the clear"}, "tools")
    read_only(cache_dir / key_prefix)

    writer.do("invalidate", NS)
    assert read(cache_dir, key_prefix, ["k", "j"]) == {}  # never "v1"
    assert read(cache_dir, key_prefix, ["k"], "tools") == {"k": "kept until the clear"}
    writer.do("clear")
    assert read(cache_dir, key_prefix, ["k"], "tools") == {}
    assert writer.do("get", ["k"], "tools") == {}
