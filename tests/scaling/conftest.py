"""Session-wide real topologies: ONE Redis Cluster and ONE Sentinel setup per pytest session.

Starting them costs ~5 s each, so every test shares them and isolates itself by key prefix.
A test that kills a node calls ``heal()`` before it ends (see ``healed_cluster`` and
``healed_sentinel``), so later tests always find the topology whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..topologies import ClusterTopology, SentinelTopology


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterTopology]:
    """3 primaries + 3 replicas on free loopback ports, ``cluster-node-timeout`` 1 s."""
    try:
        topology = ClusterTopology().start()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"cannot start a local Redis Cluster: {exc}", pytrace=False)
    yield topology
    topology.stop()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelTopology]:
    """A password-protected primary and replica watched by 3 sentinels (quorum 2)."""
    try:
        topology = SentinelTopology().start()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"cannot start a local Sentinel setup: {exc}", pytrace=False)
    yield topology
    topology.stop()


@pytest.fixture
def healed_cluster(redis_cluster: ClusterTopology) -> Iterator[ClusterTopology]:
    """The shared cluster for a test that damages it: restored (and checked) afterwards."""
    yield redis_cluster
    redis_cluster.heal()


@pytest.fixture
def healed_sentinel(redis_sentinel: SentinelTopology) -> Iterator[SentinelTopology]:
    """The shared Sentinel setup for a test that kills its primary: restored afterwards."""
    yield redis_sentinel
    redis_sentinel.heal()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the topology tests last: their 11 background processes (gossip, sentinel pings)
    then never share the machine with the timing-sensitive single-server fault tests."""
    here = Path(__file__).parent
    items.sort(key=lambda item: here in Path(str(item.path)).parents)
