"""Real multi-server Redis topologies on loopback: a Redis Cluster and a Sentinel-watched primary.

Each topology runs its ``redis-server`` (and sentinel) processes in a temporary folder of its own,
on free 127.0.0.1 ports, and is torn down by PID. Fault tests SIGKILL a primary and wait for the
promotion; :meth:`ClusterTopology.heal` / :meth:`SentinelTopology.heal` restart the killed node so
the topology is whole again for the next test. Every wait polls against a deadline.

Used by the session fixtures in ``tests/scaling/conftest.py`` and by ``benchmarks/bench_cluster``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from toolweaver_async.testing import HOST, find_free_port, redis_server_binary, stop_process

__all__ = ["ClusterTopology", "Node", "SentinelTopology"]

START_TIMEOUT = 20.0
SENTINEL_SERVICE = "mymaster"


def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``check`` every few milliseconds until it holds; RuntimeError after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {within} s: {what}")
        time.sleep(0.01)


class Node:
    """One ``redis-server`` (or sentinel) process with its own config file and folder."""

    def __init__(self, folder: Path, port: int, lines: list[str], *, sentinel: bool = False):
        self.port = port
        self.folder = folder
        self.sentinel = sentinel
        self.config = folder / ("sentinel.conf" if sentinel else "redis.conf")
        self._lines = lines
        self.process: subprocess.Popen[bytes] | None = None
        self.password: str | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.config.exists():  # a restart keeps what the server or sentinel rewrote
            self.config.write_text("\n".join(self._lines) + "\n")
        command = [redis_server_binary(), str(self.config)]
        if self.sentinel:
            binary = shutil.which("redis-sentinel")
            command = [binary, str(self.config)] if binary else [*command, "--sentinel"]
        with (self.folder / "log.txt").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def client(self, **options: object) -> redis.Redis:
        return redis.Redis(
            host=HOST,
            port=self.port,
            password=None if self.sentinel else self.password,
            socket_timeout=2,
            socket_connect_timeout=2,
            **options,  # type: ignore[arg-type]
        )

    def answers(self) -> bool:
        with self.client() as client:
            return bool(client.ping())

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                log = (self.folder / "log.txt").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis on port {self.port} exited:\n{log}")
            return self.answers()

        wait_for(ready, START_TIMEOUT, f"redis on port {self.port} answers PING")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL and reap: connections drop with no goodbye."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait(timeout=START_TIMEOUT)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None


def _server_lines(folder: Path, port: int) -> list[str]:
    return [
        f"port {port}",
        f"bind {HOST}",
        "protected-mode no",
        "save ''",
        "appendonly no",
        "daemonize no",
        f"dir {folder}",
    ]


class ClusterTopology:
    """3 primaries and 3 replicas (``redis-cli --cluster create --cluster-replicas 1``).

    ``cluster-node-timeout`` is 1 s, so a killed primary's replica takes over within ~2 s;
    ``cluster-require-full-coverage no`` keeps the other primaries' slots served meanwhile.
    """

    def __init__(self, *, primaries: int = 3, node_timeout_ms: int = 1000) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="tw-cluster-"))
        self.nodes: list[Node] = []
        for index in range(primaries * 2):
            port, bus = find_free_port(), find_free_port()
            folder = self.folder / f"node{index}"
            lines = [
                *_server_lines(folder, port),
                "cluster-enabled yes",
                f"cluster-port {bus}",
                "cluster-config-file nodes.conf",
                f"cluster-node-timeout {node_timeout_ms}",
                "cluster-require-full-coverage no",
                "cluster-replica-validity-factor 0",
                "cluster-allow-reads-when-down yes",
            ]
            self.nodes.append(Node(folder, port, lines))
        self._primaries = primaries

    @property
    def url(self) -> str:
        """A plain URL naming one node: the cache finds the others from it."""
        return f"redis://{self.nodes[0].address}/0"

    def start(self) -> ClusterTopology:
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                node.wait_ready()
            subprocess.run(
                [
                    shutil.which("redis-cli") or "redis-cli",
                    "--cluster", "create",
                    *[node.address for node in self.nodes],
                    "--cluster-replicas", "1",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )  # fmt: skip
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def cluster_nodes(self) -> list[dict[str, str]]:
        """``CLUSTER NODES`` as seen by a live node: id, address, role flags, primary id."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with node.client() as client:
                    text = client.execute_command("CLUSTER", "NODES")
            except (redis.RedisError, OSError):
                continue
            text = text.decode() if isinstance(text, bytes) else text
            rows = []
            for line in text.strip().splitlines():
                fields = line.split()
                rows.append(
                    {
                        "id": fields[0],
                        "address": fields[1].split("@")[0],
                        "flags": fields[2],
                        "primary": fields[3],
                        "slots": " ".join(fields[8:]),
                    }
                )
            return rows
        raise RuntimeError("no cluster node answers")

    def primaries(self) -> list[Node]:
        """The nodes that are primaries right now, serving slots."""
        by_address = {node.address: node for node in self.nodes}
        return [
            by_address[row["address"]]
            for row in self.cluster_nodes()
            if "master" in row["flags"] and "fail" not in row["flags"] and row["slots"]
        ]

    def replica_of(self, primary: Node) -> Node:
        rows = self.cluster_nodes()
        primary_id = next(row["id"] for row in rows if row["address"] == primary.address)
        by_address = {node.address: node for node in self.nodes}
        return next(by_address[row["address"]] for row in rows if row["primary"] == primary_id)

    def wait_healthy(self, within: float = START_TIMEOUT) -> None:
        """Every node runs and agrees: cluster state ok, 3 primaries with a linked replica each."""

        def healthy() -> bool:
            for node in self.nodes:
                with node.client() as client:
                    info = client.execute_command("CLUSTER", "INFO")
                info = info.decode() if isinstance(info, bytes) else info
                if "cluster_state:ok" not in info or "cluster_known_nodes:6" not in info:
                    return False
            rows = self.cluster_nodes()
            primaries = [r for r in rows if "master" in r["flags"] and r["slots"]]
            replicas = [r for r in rows if "slave" in r["flags"]]
            if any("fail" in r["flags"] or "handshake" in r["flags"] for r in rows):
                return False
            if len(primaries) != self._primaries or len(replicas) != self._primaries:
                return False
            for row in replicas:  # replicas in sync, so a later failover loses nothing old
                node = next(n for n in self.nodes if n.address == row["address"])
                with node.client() as client:
                    if client.info("replication").get("master_link_status") != "up":
                        return False
            return True

        wait_for(healthy, within, "cluster healthy")

    def wait_promoted(self, dead: Node, within: float = START_TIMEOUT) -> Node:
        """After ``dead`` (a primary) was killed: wait until another node serves its slots."""

        def promoted() -> bool:
            rows = self.cluster_nodes()
            alive = [r for r in rows if "master" in r["flags"] and "fail" not in r["flags"]]
            return sum(1 for r in alive if r["slots"] and r["address"] != dead.address) == (
                self._primaries
            )

        wait_for(promoted, within, f"a replica of {dead.address} promoted")
        return self.primaries()[0]

    def heal(self) -> None:
        """Restart every stopped node (a killed primary rejoins as a replica) and wait."""
        for node in self.nodes:
            if not node.running:
                node.start()
                node.wait_ready()
        self.wait_healthy(within=30.0)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class SentinelTopology:
    """A primary, one replica and three sentinels (quorum 2) watching service ``mymaster``.

    Data nodes require ``password``; a killed primary is declared down after
    ``down_after_ms`` and its replica promoted within a few seconds.
    """

    def __init__(
        self, *, password: str = "s3cret-data", down_after_ms: int = 1000, failover_ms: int = 3000
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="tw-sentinel-"))
        self.password = password
        primary_port, replica_port = find_free_port(), find_free_port()
        auth = [f"requirepass {password}", f"masterauth {password}"]
        self.data_nodes = [
            Node(
                self.folder / "primary",
                primary_port,
                [*_server_lines(self.folder / "primary", primary_port), *auth],
            ),
            Node(
                self.folder / "replica",
                replica_port,
                [
                    *_server_lines(self.folder / "replica", replica_port),
                    *auth,
                    f"replicaof {HOST} {primary_port}",
                ],
            ),
        ]
        for node in self.data_nodes:
            node.password = password
        self.sentinels: list[Node] = []
        for index in range(3):
            port = find_free_port()
            folder = self.folder / f"sentinel{index}"
            lines = [
                f"port {port}",
                f"bind {HOST}",
                "protected-mode no",
                "daemonize no",
                f"dir {folder}",
                f"sentinel monitor {SENTINEL_SERVICE} {HOST} {primary_port} 2",
                f"sentinel auth-pass {SENTINEL_SERVICE} {password}",
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {down_after_ms}",
                f"sentinel failover-timeout {SENTINEL_SERVICE} {failover_ms}",
                f"sentinel parallel-syncs {SENTINEL_SERVICE} 1",
            ]
            self.sentinels.append(Node(folder, port, lines, sentinel=True))

    def url(self, *, with_password: bool = True, db: int = 0) -> str:
        """``redis+sentinel://[:password@]host:port,host:port,host:port/mymaster/db``."""
        hosts = ",".join(s.address for s in self.sentinels)
        auth = f":{self.password}@" if with_password else ""
        return f"redis+sentinel://{auth}{hosts}/{SENTINEL_SERVICE}/{db}"

    def start(self) -> SentinelTopology:
        try:
            for node in self.data_nodes:
                node.start()
            for node in self.data_nodes:
                node.wait_ready()
            for sentinel in self.sentinels:
                sentinel.start()
            for sentinel in self.sentinels:
                sentinel.wait_ready()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def primary(self) -> Node:
        """The data node the sentinels name as primary now."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            with sentinel.client() as client:
                address = client.sentinel_get_master_addr_by_name(SENTINEL_SERVICE)
            port = int(address[1])
            return next(node for node in self.data_nodes if node.port == port)
        raise RuntimeError("no sentinel answers")

    def wait_healthy(self, within: float = 30.0) -> None:
        """Both data nodes up, the replica in sync, and every sentinel agreeing on the primary
        and seeing the replica and the two other sentinels."""

        def healthy() -> bool:
            primary = self.primary()
            for node in self.data_nodes:
                if not node.running:
                    return False
            replica = next(n for n in self.data_nodes if n is not primary)
            with replica.client() as client:
                info = client.info("replication")
                if info.get("role") != "slave" or info.get("master_link_status") != "up":
                    return False
                if int(info.get("master_port", 0)) != primary.port:
                    return False
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    state = client.sentinel_master(SENTINEL_SERVICE)
                    replicas = client.sentinel_slaves(SENTINEL_SERVICE)
                if int(state["port"]) != primary.port or state.get("is_sdown"):
                    return False
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
                for row in replicas:
                    if int(row["port"]) == replica.port and (
                        row.get("is_sdown") or row.get("is_disconnected")
                    ):
                        return False
            return True

        wait_for(healthy, within, "sentinel setup healthy")

    def wait_promoted(self, dead: Node, within: float = 30.0) -> Node:
        """After ``dead`` was killed: wait until the sentinels name another primary that
        accepts writes."""

        def promoted() -> bool:
            primary = self.primary()
            if primary is dead:
                return False
            with primary.client() as client:
                return client.info("replication").get("role") == "master"

        wait_for(promoted, within, f"sentinels promote a replica of {dead.address}")
        return self.primary()

    def heal(self) -> None:
        """Restart a killed data node (the sentinels turn it into a replica) and wait."""
        for node in self.data_nodes:
            if not node.running:
                # Rejoin as a replica of whoever is primary now: it must not come back as a
                # second primary with old data.
                primary = self.primary()
                node.config.write_text(
                    "\n".join(
                        [
                            *_server_lines(node.folder, node.port),
                            f"requirepass {self.password}",
                            f"masterauth {self.password}",
                            f"replicaof {HOST} {primary.port}",
                        ]
                    )
                    + "\n"
                )
                node.start()
                node.wait_ready()
        self.wait_healthy()

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data_nodes]:
            node.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def wait_replicated(primary: Node, replica: Node, within: float = 10.0) -> None:
    """Until ``replica`` has applied everything ``primary`` has written so far."""
    with primary.client() as client:
        offset = int(client.info("replication")["master_repl_offset"])

    def caught_up() -> bool:
        with replica.client() as client:
            return int(client.info("replication").get("slave_repl_offset", -1)) >= offset

    wait_for(caught_up, within, f"{replica.address} replicated {primary.address}")


def cut_replication(primary: Node) -> None:
    """Drop ``primary``'s links to its replicas. With the replica paused first (so it cannot
    reconnect and resync at once), a write acknowledged now reaches no replica: the lost-write
    window of asynchronous replication, made certain."""
    with primary.client() as client:
        client.execute_command("CLIENT", "KILL", "TYPE", "replica")


def pause(node: Node) -> None:
    """SIGSTOP: the process keeps its sockets but reads and applies nothing until resumed."""
    assert node.process is not None
    node.process.send_signal(signal.SIGSTOP)


def resume(node: Node) -> None:
    if node.process is not None and node.process.poll() is None:
        node.process.send_signal(signal.SIGCONT)
