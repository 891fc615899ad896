"""``@cache.cached``: an async function whose results are cached by its arguments.

The key is ``<module>.<qualified name>:<hash>``, the hash a stable BLAKE2b of the arguments
bound to the signature (defaults applied, keyword order and dict key order irrelevant), so equal
calls share a key in every process. For methods, the receiver (a first parameter named ``self``
or ``cls``) is left out of the hash and its class named instead: every instance of a class
shares results, which is right for stateless services and clients, and wrong when the result
depends on the instance; pass ``key=`` then.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, Self, TypeVar, overload

from ..errors import ConfigError
from ..keys import check_key, named_key

if TYPE_CHECKING:
    from .coordinator import LoadCoordinator, LoadOptions

__all__ = ["BoundCachedFunction", "CachedFunction"]

P = ParamSpec("P")
R = TypeVar("R")

_RECEIVERS = frozenset({"self", "cls"})


class _DeletesKeys(Protocol):
    """What a cached function needs of its cache: removing one key from every store."""

    async def delete(self, key: str, *, namespace: str = ...) -> bool: ...


class CachedFunction(Generic[P, R]):
    """The result of ``@cache.cached(...)``: call it like the function it wraps.

    ``await f.invalidate(*args, **kwargs)`` forgets the result of those arguments (and any
    failure remembered for them), ``await f.uncached(*args, **kwargs)`` calls the function
    without the cache, and ``f.key_for(*args, **kwargs)`` is the key a call would use.
    """

    def __init__(
        self,
        fn: Callable[P, Awaitable[R]],
        *,
        cache: _DeletesKeys,
        loads: LoadCoordinator,
        namespace: str,
        key: Callable[..., str] | None,
        options: LoadOptions,
    ) -> None:
        if not (inspect.iscoroutinefunction(fn) or _has_async_call(fn)):
            raise ConfigError(f"@cache.cached decorates async functions; {_name_of(fn)} is not one")
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.namespace = namespace
        self.ttl = options.ttl
        self._cache = cache
        self._loads = loads
        self._key = key
        self._options = options
        self._name = _name_of(fn)
        try:
            self._signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            self._signature = None
        self._receiver = _receiver_of(self._signature)
        self._plain = _PlainBinder.of(self._signature)

    def __repr__(self) -> str:
        return f"<cached {self._name} namespace={self.namespace!r}>"

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        # Straight to the coordinator: namespace and options were checked once, at decoration.
        result: R = await self._loads.get_or_set(
            self.namespace,
            self.key_for(*args, **kwargs),
            functools.partial(self.fn, *args, **kwargs),
            self._options,
        )
        return result

    def key_for(self, *args: Any, **kwargs: Any) -> str:
        """The cache key of a call with these arguments."""
        if self._key is not None:
            return check_key(self._key(*args, **kwargs))
        name = self._name
        arguments = self._bind(args, kwargs)
        if self._receiver is not None and isinstance(arguments, dict):
            receiver = arguments.pop(self._receiver, None)
            owner = receiver if isinstance(receiver, type) else type(receiver)
            name = f"{owner.__module__}.{owner.__qualname__}.{self.fn.__name__}"
        return named_key(name, arguments)

    async def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Forget the cached result of these arguments in every store; ``True`` when any
        store held it."""
        key = self.key_for(*args, **kwargs)
        self._loads.forget(self.namespace, key)
        return await self._cache.delete(key, namespace=self.namespace)

    async def uncached(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function itself: no cache read, no cache write."""
        return await self.fn(*args, **kwargs)

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...

    @overload
    def __get__(
        self, instance: object, owner: type[Any] | None = None
    ) -> BoundCachedFunction[R]: ...

    def __get__(
        self, instance: object | None, owner: type[Any] | None = None
    ) -> Self | BoundCachedFunction[R]:
        if instance is None:
            return self
        return BoundCachedFunction(self, instance)

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The arguments by parameter name with defaults applied (as ``keys.function_key``)."""
        if self._plain is not None:
            arguments = self._plain.bind(args, kwargs)
            if arguments is not None:
                return arguments
        if self._signature is not None:
            try:
                bound = self._signature.bind(*args, **kwargs)
            except TypeError:
                pass
            else:
                bound.apply_defaults()
                return dict(bound.arguments)
        return [list(args), dict(kwargs)]


class BoundCachedFunction(Generic[R]):
    """A :class:`CachedFunction` method bound to its instance (or class)."""

    __slots__ = ("__func__", "__self__")

    def __init__(self, function: CachedFunction[..., R], receiver: object) -> None:
        self.__func__ = function
        self.__self__ = receiver

    def __repr__(self) -> str:
        return f"<bound {self.__func__!r} of {self.__self__!r}>"

    async def __call__(self, *args: Any, **kwargs: Any) -> R:
        return await self.__func__(self.__self__, *args, **kwargs)

    def key_for(self, *args: Any, **kwargs: Any) -> str:
        return self.__func__.key_for(self.__self__, *args, **kwargs)

    async def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        return await self.__func__.invalidate(self.__self__, *args, **kwargs)

    async def uncached(self, *args: Any, **kwargs: Any) -> R:
        return await self.__func__.uncached(self.__self__, *args, **kwargs)


class _PlainBinder:
    """``Signature.bind`` + ``apply_defaults`` for the common signature whose parameters are
    all plain positional-or-keyword ones, in a third of the time (the key is built on every
    call). Equal to what ``Signature.bind`` gives up to key order, which the hash ignores."""

    __slots__ = ("defaults", "names")

    def __init__(self, names: tuple[str, ...], defaults: dict[str, Any]) -> None:
        self.names = names
        self.defaults = defaults

    @classmethod
    def of(cls, signature: inspect.Signature | None) -> _PlainBinder | None:
        if signature is None:
            return None
        parameters = signature.parameters.values()
        if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters):
            return None
        defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
        return cls(tuple(signature.parameters), defaults)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The bound arguments, or ``None`` when they do not fit (the slow path decides)."""
        names = self.names
        if len(args) > len(names):
            return None
        arguments = dict(zip(names, args, strict=False))
        for name, value in kwargs.items():
            if name in arguments or name not in names:
                return None
            arguments[name] = value
        if len(arguments) < len(names):
            for name in names:
                if name not in arguments:
                    if name not in self.defaults:
                        return None
                    arguments[name] = self.defaults[name]
        return arguments


def _receiver_of(signature: inspect.Signature | None) -> str | None:
    """The name of the first parameter when it is a method's receiver (``self``/``cls``)."""
    if signature is None:
        return None
    for parameter in signature.parameters.values():
        positional = parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
        return parameter.name if positional and parameter.name in _RECEIVERS else None
    return None


def _name_of(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _has_async_call(fn: object) -> bool:
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the class's __call__, not callable()
    return call is not None and inspect.iscoroutinefunction(call)
