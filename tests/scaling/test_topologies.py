"""The topology fixtures themselves: what the scaling tests rely on."""

from __future__ import annotations

from ..topologies import ClusterTopology, SentinelTopology


def test_cluster_has_three_primaries_each_with_a_replica(redis_cluster: ClusterTopology) -> None:
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    replicas = {redis_cluster.replica_of(primary).address for primary in primaries}
    assert len(replicas) == 3
    assert not replicas & {p.address for p in primaries}


def test_sentinels_agree_on_a_password_protected_primary(
    redis_sentinel: SentinelTopology,
) -> None:
    primary = redis_sentinel.primary()
    with primary.client() as client:
        assert client.info("replication")["role"] == "master"
        assert client.info("replication")["connected_slaves"] == 1
