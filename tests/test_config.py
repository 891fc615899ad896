"""CacheConfig: defaults, validation and the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolweaver_async import CacheConfig, ConfigError, NamespacePolicy, redact_url


def test_defaults_match_the_design() -> None:
    config = CacheConfig()
    assert config.use_redis is False
    assert config.enabled_stores == ("memory", "file")
    ttls = {name: config.policy(name).ttl for name in config.namespaces}
    assert ttls == {
        "default": 3600,
        "catalog": 86400,
        "search": 3600,
        "embeddings": 7 * 86400,
        "tools": 86400,
        "results": 300,
    }
    assert config.policy("never-configured").ttl == 3600


def test_user_namespaces_merge_over_defaults() -> None:
    config = CacheConfig(
        namespaces={"search": NamespacePolicy(ttl=60), "llm": NamespacePolicy(ttl=None)}
    )
    assert config.policy("search").ttl == 60
    assert config.policy("llm").ttl is None
    assert config.policy("catalog").ttl == 86400


def test_from_env_reads_the_documented_variables(tmp_path: Path) -> None:
    env = {
        "USE_REDIS": "true",
        "REDIS_URL": "redis://127.0.0.1:6390/2",
        "REDIS_PASSWORD": "s3cret",
        "TOOLWEAVER_CACHE_DIR": str(tmp_path),
        "TOOLWEAVER_CACHE_PREFIX": "agent7",
    }
    config = CacheConfig.from_env(env)
    assert config.use_redis is True
    assert config.enabled_stores == ("memory", "redis", "file")
    assert config.redis_url == "redis://127.0.0.1:6390/2"
    assert config.redis_password == "s3cret"
    assert config.cache_dir == tmp_path
    assert config.key_prefix == "agent7"
    assert CacheConfig.from_env(env, use_redis=False).enabled_stores == ("memory", "file")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stores": ("memory", "disk")}, "stores"),
        ({"stores": ("redis",)}, "no store left"),
        ({"key_prefix": "a b"}, "key_prefix"),
        ({"key_prefix": "../x"}, "key_prefix"),
        ({"use_redis": True, "redis_url": "http://localhost"}, "redis://"),
        ({"use_redis": True, "redis_url": "redis://"}, "no host"),
        ({"memory_max_entries": 0}, "memory_max_entries"),
        ({"redis_command_timeout": -1}, "redis_command_timeout"),
        ({"file_timeout": 0}, "file_timeout"),
        ({"namespaces": {"bad/name": NamespacePolicy()}}, "namespace"),
    ],
)
def test_bad_configuration_is_a_clear_config_error(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        CacheConfig(**changes)  # type: ignore[arg-type]


def test_bad_environment_values_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="USE_REDIS"):
        CacheConfig.from_env({"USE_REDIS": "maybe"})
    with pytest.raises(ConfigError, match="unknown CacheConfig fields"):
        CacheConfig.from_env({}, use_rediss=True)


@pytest.mark.parametrize("bad", [{"ttl": 0}, {"ttl": -5}, {"ttl": float("nan")}, {"ttl_jitter": 2}])
def test_bad_namespace_policy_is_rejected(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        NamespacePolicy(**bad)


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("redis://user:pw@host:6380/1") == "redis://user:***@host:6380/1"
    assert redact_url("rediss://:pw@h/0") == "rediss://:***@h/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
