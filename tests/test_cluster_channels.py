"""Which nodes of a ``CLUSTER NODES`` reply the cluster's invalidation channels must follow."""

from __future__ import annotations

from toolweaver_async.stores.redis.channels import cluster_primaries

NODES = """\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master,fail - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 0 3 connected
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
e5 127.0.0.1:7004@17004 master - 0 0 7 connected
f6 127.0.0.1:7005@17005 master,fail? - 0 0 4 connected 10923-16383
g7 :0@0 master,noaddr - 0 0 5 disconnected
h8 127.0.0.1:7006@17006 master,handshake - 0 0 0 connected
"""


def test_every_primary_that_may_take_writes_is_followed() -> None:
    assert cluster_primaries(NODES) == {
        ("127.0.0.1", 7000),  # serving slots
        ("127.0.0.1", 7001),  # failed but still holding slots: nothing vouches for them yet
        ("127.0.0.1", 7004),  # no slots yet: a slot migrating to it takes writes there first
        ("127.0.0.1", 7005),  # suspected only (fail?)
    }


def test_a_failed_primary_without_slots_and_replicas_are_not_followed() -> None:
    followed = cluster_primaries(NODES)
    assert ("127.0.0.1", 7002) not in followed  # replaced by its promoted replica
    assert ("127.0.0.1", 7003) not in followed
    assert ("127.0.0.1", 7006) not in followed
