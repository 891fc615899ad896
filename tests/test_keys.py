"""Stable hashing and key shapes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolweaver_async import InvalidKeyError, UnhashableArgumentsError, stable_hash
from toolweaver_async.keys import check_key, function_key, result_key

values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=6), values, max_size=6))
def test_dict_key_order_does_not_change_the_hash(mapping: dict[str, Any]) -> None:
    reordered = dict(reversed(list(mapping.items())))
    assert stable_hash(mapping) == stable_hash(reordered)


@given(values, values)
def test_equal_hashes_only_for_equal_values(a: Any, b: Any) -> None:
    if stable_hash(a) == stable_hash(b):
        assert a == b


def test_keyword_order_does_not_change_function_key() -> None:
    async def tool(a: int, b: int) -> int:
        return a + b

    assert function_key(tool, (), {"a": 1, "b": 2}) == function_key(tool, (), {"b": 2, "a": 1})
    assert function_key(tool, (1,), {}) != function_key(tool, (2,), {})
    assert "tool" in function_key(tool, (), {})


def test_unhashable_arguments_give_a_clear_error() -> None:
    with pytest.raises(UnhashableArgumentsError, match="object"):
        stable_hash({"x": object()})


def test_tool_result_key_is_stable_over_argument_order() -> None:
    assert result_key("search", {"q": "x", "k": 5}) == result_key("search", {"k": 5, "q": "x"})
    assert result_key("search", {"q": "x"}).startswith("result:search:")


def test_non_string_keys_are_refused() -> None:
    with pytest.raises(InvalidKeyError):
        check_key(123)
    assert check_key("ok") == "ok"
