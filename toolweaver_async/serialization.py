"""Entries as bytes: a msgspec envelope (format version, key, timestamps) around a msgpack payload.

One encode per write, one decode per read: the envelope is a generic ``msgspec.Struct`` so the
payload is encoded and decoded in the same pass. Encoders and per-type decoders are built once.
The memory layer checks an entry's envelope once (:meth:`EntryCodec.decode_header`) and from then
on decodes only its payload (:meth:`EntryCodec.payload_decoder`). No pickle: bytes from a store
can never run code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from .errors import CorruptEntryError, SerializationError, ValueTooLargeError

__all__ = ["FORMAT_VERSION", "EntryCodec", "Envelope", "PayloadDecodeError"]

T = TypeVar("T")

# Bumped whenever the envelope's layout changes; entries of another version read as corrupt.
FORMAT_VERSION = 0x7701


class Envelope(msgspec.Struct, Generic[T], array_like=True, frozen=True):
    """One cache entry. Times are wall-clock seconds (they are persisted and shared between
    processes); ``expires_at`` ends freshness, ``stale_until`` (>= expires_at) ends the grace
    period in which a stale value may still be served while it is refreshed."""

    version: int
    namespace: str
    key: str
    created_at: float
    expires_at: float | None
    stale_until: float | None
    payload: T

    @property
    def hard_expires_at(self) -> float | None:
        """When no reader may use this entry any more."""
        return self.stale_until if self.stale_until is not None else self.expires_at


class TypeMismatchError(Exception):
    """The entry is ours but its payload does not fit the requested type (internal)."""


# What a payload decoder raises: ValidationError (the payload does not fit the requested type)
# or DecodeError (not msgpack at all), both subclasses of this.
PayloadDecodeError = msgspec.DecodeError


class EntryCodec:
    """Encodes values into entry bytes and decodes them back, with a size bound."""

    def __init__(self, *, max_value_bytes: int) -> None:
        self.max_value_bytes = max_value_bytes
        self._encoder = msgspec.msgpack.Encoder()
        self._any_decoder: msgspec.msgpack.Decoder[Envelope[Any]] = msgspec.msgpack.Decoder(
            Envelope[Any]
        )
        self._raw_decoder: msgspec.msgpack.Decoder[Envelope[msgspec.Raw]] = msgspec.msgpack.Decoder(
            Envelope[msgspec.Raw]
        )
        self._typed_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}
        any_payload = msgspec.msgpack.Decoder()
        self._payload_decoders: dict[Any, Callable[[Any], Any]] = {None: any_payload.decode}

    def encode(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        created_at: float,
        expires_at: float | None,
        stale_until: float | None = None,
    ) -> bytes:
        """Entry bytes for ``value``; raises ``SerializationError`` or ``ValueTooLargeError``."""
        envelope = Envelope(
            FORMAT_VERSION, namespace, key, created_at, expires_at, stale_until, value
        )
        try:
            data = self._encoder.encode(envelope)
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
            # RecursionError: a cyclic value, or one nested deeper than the interpreter's
            # recursion limit allows; msgspec stops cleanly, so nothing is half-written.
            type_name = type(value).__qualname__
            why = "cyclic or nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            # The envelope also carries the key: name the part that failed, not the value
            # when it is the key (a lone surrogate) that UTF-8 cannot hold.
            bad_key = _unencodable(key)
            if bad_key is not None:
                raise SerializationError(
                    f"cannot cache key {key!r} in namespace {namespace!r}: the key itself is "
                    f"not encodable ({bad_key}); keys must be valid UTF-8 text",
                    key=key,
                    value_type=None,
                ) from exc
            raise SerializationError(
                f"cannot cache key {key!r} in namespace {namespace!r}: value of type "
                f"{type_name} is not encodable with msgspec ({why})",
                key=key,
                value_type=type_name,
            ) from exc
        if len(data) > self.max_value_bytes:
            raise ValueTooLargeError(
                f"cannot cache key {key!r} in namespace {namespace!r}: encoded size "
                f"{len(data)} bytes is over max_value_bytes={self.max_value_bytes}",
                key=key,
                size=len(data),
                limit=self.max_value_bytes,
            )
        return data

    def encode_payload(self, value: Any) -> bytes:
        """The msgpack bytes of ``value`` alone (used for stable hashing and size checks)."""
        try:
            return self._encoder.encode(value)
        except RecursionError as exc:
            raise SerializationError(
                f"value of type {type(value).__qualname__} is cyclic or nested too deeply",
                value_type=type(value).__qualname__,
            ) from exc

    def decode(self, data: bytes, type_: Any = None) -> Envelope[Any]:
        """The envelope in ``data`` with its payload decoded as ``type_`` (builtins when None).

        Raises ``CorruptEntryError`` for bytes that are not one of our entries and
        ``TypeMismatchError`` for our entry whose payload does not fit ``type_``.
        """
        decoder = self._any_decoder if type_ is None else self._decoder_for(type_)
        try:
            envelope: Envelope[Any] = decoder.decode(data)
        except msgspec.ValidationError as exc:
            if type_ is not None:
                self.decode_header(data)  # raises CorruptEntryError when the envelope is bad
                raise TypeMismatchError(str(exc)) from exc
            raise CorruptEntryError(f"not a cache entry: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise CorruptEntryError(f"not a cache entry: {exc}") from exc
        except RecursionError as exc:  # foreign bytes nested deeper than we ever write
            raise CorruptEntryError("not a cache entry: nested too deeply") from exc
        if envelope.version != FORMAT_VERSION:
            raise CorruptEntryError(f"unknown entry format version {envelope.version!r}")
        return envelope

    def decode_header(self, data: bytes) -> Envelope[msgspec.Raw]:
        """The envelope with its payload left undecoded: cheap checks of key and expiry."""
        try:
            envelope = self._raw_decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            raise CorruptEntryError(f"not a cache entry: {exc}") from exc
        if envelope.version != FORMAT_VERSION:
            raise CorruptEntryError(f"unknown entry format version {envelope.version!r}")
        return envelope

    def payload_decoder(self, type_: Any = None) -> Callable[[Any], Any]:
        """A function decoding a bare payload (``decode_header(data).payload``) as ``type_``;
        it raises :data:`PayloadDecodeError`. Built once per type."""
        try:
            decode = self._payload_decoders.get(type_)
        except TypeError:  # an unhashable type expression: build it each time
            return msgspec.msgpack.Decoder(type_).decode
        if decode is None:
            decode = self._payload_decoders[type_] = msgspec.msgpack.Decoder(type_).decode
        return decode

    def _decoder_for(self, type_: Any) -> msgspec.msgpack.Decoder[Any]:
        try:
            decoder = self._typed_decoders.get(type_)
        except TypeError:  # an unhashable type expression: build it each time
            return msgspec.msgpack.Decoder(Envelope[type_])
        if decoder is None:
            decoder = msgspec.msgpack.Decoder(Envelope[type_])
            self._typed_decoders[type_] = decoder
        return decoder


def _unencodable(text: str) -> str | None:
    """Why ``text`` cannot be written as UTF-8 (a lone surrogate), or ``None`` when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"lone surrogate {text[exc.start]!r} at position {exc.start}"
    return None
