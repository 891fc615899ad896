"""LangChain ``Generation`` lists as plain data msgspec encodes, and back without validation.

LangChain's own ``dumps``/``loads`` revive a cached list through JSON and a class registry
(22-41 us a hit, more than our whole cache hit). Here each generation (and its message) is its
class name and its field dict; a read rebuilds it with pydantic's ``model_construct``, which
skips validation: the fields were validated when the model was first built, and a write proves
the round trip before it trusts it (``encode`` decodes what it made and compares). Anything
that does not survive that check exactly (a user subclass, a tuple in ``additional_kwargs``,
an object msgspec cannot encode) is stored in LangChain's own format instead, so the encoding
is always faithful and only ever faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import langchain_core.messages as lc_messages
import msgspec
from langchain_core._api.beta_decorator import suppress_langchain_beta_warning
from langchain_core.load import dumps, loads
from langchain_core.messages.base import TextAccessor
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    Generation,
    GenerationChunk,
)
from pydantic import BaseModel

__all__ = ["decode_generations", "encode_generations"]

# [_FAST, [[generation class, fields, message class or "", message fields, text kind], ...]]
_FAST = "tw1"
_LANGCHAIN = "lc"  # [_LANGCHAIN, dumps(generations)]

_GENERATIONS: dict[str, type[Generation]] = {
    cls.__name__: cls for cls in (Generation, ChatGeneration, GenerationChunk, ChatGenerationChunk)
}
_MESSAGES: dict[str, type[BaseModel]] = {
    name: getattr(lc_messages, name)
    for name in lc_messages.__all__
    if name.endswith(("Message", "MessageChunk"))
    and name not in ("BaseMessage", "BaseMessageChunk", "AnyMessage")
    and isinstance(getattr(lc_messages, name), type)
}
_ALLOWED: list[Any] = [*_GENERATIONS.values(), *_MESSAGES.values()]
_encoder = msgspec.msgpack.Encoder()


def _fields(model: BaseModel) -> dict[str, Any]:
    extra = model.__pydantic_extra__
    return {**model.__dict__, **extra} if extra else dict(model.__dict__)


def _fast_form(generations: Sequence[Generation]) -> list[Any] | None:
    rows: list[Any] = []
    for generation in generations:
        cls_name = type(generation).__name__
        if _GENERATIONS.get(cls_name) is not type(generation):
            return None
        fields = _fields(generation)
        # ChatGeneration's validator makes ``text`` a TextAccessor (a str that can also be
        # called, for code of LangChain < 1.0); msgspec takes exact strs only.
        accessor = type(fields["text"]) is TextAccessor
        if accessor:
            fields["text"] = str(fields["text"])
        message = fields.pop("message", None)
        if message is None:
            rows.append([cls_name, fields, "", None, accessor])
            continue
        message_name = type(message).__name__
        if _MESSAGES.get(message_name) is not type(message):
            return None
        rows.append([cls_name, fields, message_name, _fields(message), accessor])
    return [_FAST, rows]


def encode_generations(generations: Sequence[Generation]) -> list[Any]:
    """A msgspec-encodable form of ``generations`` that :func:`decode_generations` turns back
    into an equal list of the same classes."""
    fast = _fast_form(generations)
    if fast is not None:
        try:
            plain = msgspec.msgpack.decode(_encoder.encode(fast))  # what the cache will hold
        except (TypeError, ValueError, msgspec.EncodeError):
            plain = None
        if plain is not None and _same(decode_generations(plain), generations):
            return fast
    return [_LANGCHAIN, dumps(list(generations))]


def _same(decoded: Sequence[Generation] | None, original: Sequence[Generation]) -> bool:
    return (
        decoded is not None
        and len(decoded) == len(original)
        and all(
            type(a) is type(b)
            and a == b
            and type(a.text) is type(b.text)
            and type(getattr(a, "message", None)) is type(getattr(b, "message", None))
            for a, b in zip(decoded, original, strict=True)
        )
    )


def decode_generations(value: Any) -> list[Generation] | None:
    """The generations ``value`` holds, or ``None`` when it is not such a value."""
    try:
        kind, body = value
        if kind == _LANGCHAIN:
            with suppress_langchain_beta_warning():
                # only these classes: a shared Redis is not a trusted manifest
                revived = loads(body, allowed_objects=_ALLOWED)
            return revived if isinstance(revived, list) else None
        if kind != _FAST:
            return None
        out: list[Generation] = []
        for cls_name, fields, message_name, message_fields, accessor in body:
            if accessor:
                fields = {**fields, "text": TextAccessor(fields["text"])}
            if message_name:
                fields = {
                    **fields,
                    "message": _MESSAGES[message_name].model_construct(**message_fields),
                }
            out.append(_GENERATIONS[cls_name].model_construct(**fields))
        return out
    except (KeyError, TypeError, ValueError):
        return None  # not written by this adapter (or by another version of it): a miss
