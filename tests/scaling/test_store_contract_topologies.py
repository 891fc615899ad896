"""The Store contract (tests/test_store_contract.py) on a Redis Cluster and behind Sentinel.

Same tests, two more kinds of store: each needs this folder's session-wide topology, so the
suite is subclassed here with its own ``kind`` instead of joining the root ``BUILDERS``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from toolweaver_async import RedisStore
from toolweaver_async.stores.base import Store

from .. import test_store_contract as contract  # the module: its base suite is not run twice
from ..topologies import ClusterTopology, SentinelTopology


def _cluster(request: pytest.FixtureRequest) -> contract.StoreKind:
    cluster: ClusterTopology = request.getfixturevalue("redis_cluster")
    base = "c" + uuid.uuid4().hex[:10]
    return contract.StoreKind(
        "redis",
        lambda prefix: RedisStore(
            url=cluster.url, key_prefix=f"{base}-{prefix}", **contract.PATIENT
        ),
        None,
    )


def _sentinel(request: pytest.FixtureRequest) -> contract.StoreKind:
    sentinel: SentinelTopology = request.getfixturevalue("redis_sentinel")
    base = "s" + uuid.uuid4().hex[:10]
    url = sentinel.url()

    def opener(prefix: str) -> Store:
        return RedisStore(url=url, key_prefix=f"{base}-{prefix}", **contract.PATIENT)

    return contract.StoreKind("redis", opener, None)


TOPOLOGIES: dict[str, Callable[[pytest.FixtureRequest], contract.StoreKind]] = {
    "redis-cluster": _cluster,
    "redis-sentinel": _sentinel,
}


class TestStoreContractOnTopologies(contract.TestStoreContract):
    @pytest.fixture(params=list(TOPOLOGIES))
    def kind(self, request: pytest.FixtureRequest, tmp_path: Path) -> contract.StoreKind:
        # Built outside the event loop: the first use starts the session's topology.
        return TOPOLOGIES[request.param](request)
