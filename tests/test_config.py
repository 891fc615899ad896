"""CacheConfig: defaults, validation and the environment."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from toolweaver_async import CacheConfig, ConfigError, NamespacePolicy, redact_url
from toolweaver_async.config import check_name


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


@pytest.mark.parametrize("name", ["ok\n", "ok\r\n", "\nok", "ok\x00", "ok ", "a" * 65])
def test_name_checks_match_the_whole_string(name: str) -> None:
    with pytest.raises(ConfigError):
        check_name(name, what="namespace")
    with pytest.raises(ConfigError, match="key_prefix"):
        CacheConfig(key_prefix=name)
    with pytest.raises(ConfigError, match="namespace"):
        CacheConfig(namespaces={name: NamespacePolicy()})


def test_a_str_subclass_name_comes_back_as_a_plain_str() -> None:
    class Sneaky(str):
        def __str__(self) -> str:
            return "../elsewhere"

    checked = check_name(Sneaky("plain"), what="namespace")
    assert type(checked) is str
    assert checked == "plain"


_SECRET = "s3cr/et?#x"


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cr/et?#x@127.0.0.1:6379/0",
        "redis://user:s3cr/et?#x@127.0.0.1:6379/0",
        "redis://:s3cr#et?/x@127.0.0.1/0",
        "rediss://user:s3cr?et/#x@127.0.0.1:abc/0",
        "redis://user:s3cr/et?#x",
        "redis://:s3cr/et?#x@",
    ],
)
def test_no_password_reaches_a_repr_or_a_config_error(url: str) -> None:
    config = CacheConfig(use_redis=False, redis_url=url, redis_password=_SECRET)
    for text in (repr(config), str(config), redact_url(url)):
        assert "s3cr" not in text
        assert "et?" not in text
    with pytest.raises(ConfigError) as raised:  # every one of these URLs is broken
        CacheConfig(use_redis=True, redis_url=url)
    shown = "".join(traceback.format_exception(raised.value))
    assert "s3cr" not in shown
    assert "et?" not in shown


def test_a_password_in_the_query_string_is_redacted() -> None:
    url = "redis://127.0.0.1:6379/0?db=1&password=s3cr/et&Sentinel_Password=s3cr"
    config = CacheConfig(use_redis=True, redis_url=url)
    for text in (repr(config), redact_url(url)):
        assert "s3cr" not in text
    assert redact_url(url).endswith("?db=1&password=***&Sentinel_Password=***")


def test_a_password_holding_url_delimiters_is_refused_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="percent-encode"):
        CacheConfig(use_redis=True, redis_url="redis://:pa/ss@127.0.0.1:6379/0")
    encoded = "redis://:pa%2Fss@127.0.0.1:6379/0"
    assert CacheConfig(use_redis=True, redis_url=encoded).redis_url == encoded
    assert redact_url(encoded) == "redis://:***@127.0.0.1:6379/0"


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:abc/0", "redis://:pw@127.0.0.1:99999/0", "redis://h:-1"]
)
def test_a_bad_port_is_a_config_error_not_a_bare_value_error(url: str) -> None:
    with pytest.raises(ConfigError, match="port"):
        CacheConfig(use_redis=True, redis_url=url)
    assert "pw" not in redact_url(url)


def test_a_redis_url_that_is_not_a_string_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        CacheConfig(use_redis=True, redis_url=None)  # type: ignore[arg-type]


def test_cli_output_never_shows_the_password(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "USE_REDIS": "true",
        "REDIS_URL": "redis://:s3cr/et?#x@127.0.0.1:1/0",
        "TOOLWEAVER_CACHE_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "toolweaver_async", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "ConfigError" in done.stderr
    assert "s3cr" not in done.stdout + done.stderr
