"""EntryCodec: one-pass envelopes, typed decoding, and bytes that are not ours."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolweaver_async import CorruptEntryError, SerializationError, ValueTooLargeError
from toolweaver_async.serialization import EntryCodec, TypeMismatchError

codec = EntryCodec(max_value_bytes=1 << 20)

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(json_like)
def test_any_encodable_value_round_trips(value: Any) -> None:
    data = codec.encode("ns", "k", value, created_at=1.0, expires_at=2.0)
    envelope = codec.decode(data)
    assert envelope.payload == value
    assert (envelope.namespace, envelope.key, envelope.expires_at) == ("ns", "k", 2.0)


class Tool(msgspec.Struct):
    name: str
    score: float


@dataclasses.dataclass
class Hit:
    id: int
    tags: list[str]


def test_typed_decoding_builds_structs_dataclasses_and_float_lists() -> None:
    data = codec.encode("ns", "k", Tool("search", 1), created_at=0, expires_at=None)
    assert codec.decode(data, Tool).payload == Tool("search", 1.0)
    assert codec.decode(data).payload == {"name": "search", "score": 1}
    data = codec.encode("ns", "k", Hit(3, ["a"]), created_at=0, expires_at=None)
    assert codec.decode(data, Hit).payload == Hit(3, ["a"])
    data = codec.encode("ns", "k", [1, 2.5], created_at=0, expires_at=None)
    assert codec.decode(data, list[float]).payload == [1.0, 2.5]


def test_payload_of_another_shape_is_a_type_mismatch_not_corruption() -> None:
    data = codec.encode("ns", "k", {"a": 1}, created_at=0, expires_at=None)
    with pytest.raises(TypeMismatchError):
        codec.decode(data, list[int])


@pytest.mark.parametrize(
    "foreign",
    [
        b"",
        b"hello",
        b"\x93\x01\x02\x03",
        msgspec.msgpack.encode({"a": 1}),
        b"\x80\x04\x95" + b"\x00" * 20,
    ],  # the start of a pickle
)
def test_bytes_that_are_not_an_entry_are_corrupt(foreign: bytes) -> None:
    with pytest.raises(CorruptEntryError):
        codec.decode(foreign)
    with pytest.raises(CorruptEntryError):
        codec.decode(foreign, dict[str, int])


def test_truncated_entry_is_corrupt() -> None:
    data = codec.encode("ns", "k", {"a": "x" * 100}, created_at=0, expires_at=None)
    with pytest.raises(CorruptEntryError):
        codec.decode(data[:-10])


def test_unencodable_value_names_key_and_type() -> None:
    value = {"conn": threading.Lock()}
    with pytest.raises(SerializationError, match=r"'user:1'.*dict") as info:
        codec.encode("ns", "user:1", value, created_at=0, expires_at=None)
    assert info.value.key == "user:1"
    assert "lock" in str(info.value)


def test_oversized_value_is_refused_with_its_size() -> None:
    small = EntryCodec(max_value_bytes=1000)
    with pytest.raises(ValueTooLargeError) as info:
        small.encode("ns", "big", "x" * 2000, created_at=0, expires_at=None)
    assert info.value.size > 2000
    assert info.value.limit == 1000
