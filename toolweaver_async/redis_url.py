"""Redis URLs: the forms the cache accepts, their checks, and their redaction.

``redis://``, ``rediss://``, ``unix://`` and ``redis+sentinel://`` (see :class:`SentinelURL`).
Every message that shows a URL shows it through :func:`redact_url`: a password never reaches a
repr, a log line or the command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .errors import ConfigError

__all__ = [
    "SENTINEL_SCHEMES",
    "SentinelURL",
    "check_redis_url",
    "parse_sentinel_url",
    "redact_url",
]

# host[:port] or [v6]:port, comma-separated for Sentinel; anything else after a ':' may be a
# password whose '@host' was left out.
_HOST_PORT = r"(?:\[[^\]]*\]|[^:,\[\]]*)(?::[0-9]*)?"
_PORTS = re.compile(f"{_HOST_PORT}(?:,{_HOST_PORT})*")
_AUTHORITY_END = re.compile(r"[/?#]")
# Query parameters redis-py turns into connection options that are secrets.
_SECRET_QUERY = re.compile(r"(?i)(password[^=&#]*=)[^&#]*")


def redact_url(url: object) -> str:
    """``url`` with its password (and any ``password=`` query value) replaced by ``***``, safe
    for logs, messages and health reports.

    Deliberately not ``urlsplit``: a password holding ``/``, ``?`` or ``#`` ends its netloc early,
    and the rest of the password would be shown as a path or query. Everything between ``://``
    and the last ``@`` is taken as the user part instead, so such a URL is over-redacted rather
    than leaked; a user name before a ``:`` is kept.
    """
    if not isinstance(url, str):
        return f"<{type(url).__name__}, not a URL>"
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _SECRET_QUERY.sub(r"\1***", url)
    userinfo, at, after = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        shown_user = f"{user}:***" if colon and "/" not in user else "***"
        rest = f"{shown_user}@{after}"
    elif not _PORTS.fullmatch(_AUTHORITY_END.split(rest, maxsplit=1)[0]):
        # "redis://user:secret" (the '@host' forgotten): its "port" may be a password
        return f"{scheme}://***"
    return f"{scheme}://" + _SECRET_QUERY.sub(r"\1***", rest)


SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]``.

    The password (and user) apply to the data nodes, as ``REDIS_PASSWORD`` does; the
    sentinels themselves are reached without one. ``tls`` (``rediss+sentinel``) applies to the
    data nodes too.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_sentinel_url(url: str) -> SentinelURL:
    """Read a ``redis+sentinel://`` URL; :class:`ConfigError` naming what is wrong."""
    shown = redact_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SENTINEL_SCHEMES:
        raise ConfigError(f"not a redis+sentinel:// URL: {shown}")
    netloc, _, path = rest.partition("/")
    path = path.split("?", 1)[0].split("#", 1)[0]
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), "26379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"sentinel address {item!r} is not host:port in {shown}")
        sentinels.append((host, int(port)))
    segments = [segment for segment in path.split("/") if segment]
    if not segments or len(segments) > 2:
        raise ConfigError(
            f"a redis+sentinel:// URL needs /service_name[/db] after the sentinels: {shown}"
        )
    db = segments[1] if len(segments) == 2 else "0"
    if not db.isdigit():
        raise ConfigError(f"database {db!r} is not a number in {shown}")
    return SentinelURL(
        sentinels=tuple(sentinels),
        service=unquote(segments[0]),
        db=int(db),
        username=username,
        password=password,
        tls=scheme == "rediss+sentinel",
    )


def check_redis_url(url: object) -> None:
    """A ``ConfigError`` for a URL that cannot work; its message shows the URL redacted."""
    if not isinstance(url, str):
        raise ConfigError(f"REDIS_URL must be a string, got {type(url).__name__}")
    if url.startswith(SENTINEL_SCHEMES):
        parse_sentinel_url(url)
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        # from None: some of urllib's messages quote the netloc, password and all
        raise ConfigError(f"REDIS_URL is not a valid URL: {redact_url(url)}") from None
    if "@" in url.partition("://")[2] and "@" not in parts.netloc:
        # An '@' the URL parser did not take as the end of the user part: a password holding
        # '/', '?' or '#' (which end the host part early), or a stray '@' further on.
        raise ConfigError(
            "REDIS_URL is ambiguous: the password or user name holds '/', '?', '#' or '@', or "
            "an '@' follows the host; percent-encode them (urllib.parse.quote(password, "
            "safe='')) or pass the password as redis_password / REDIS_PASSWORD"
        )
    try:
        _ = parts.port
    except ValueError:
        # Neither the URL nor urllib's message: in "redis://user:secret" the "port" is a
        # password the user forgot to follow with '@host'.
        raise ConfigError(
            "REDIS_URL's port must be a number from 0 to 65535 (the URL is not shown: what "
            "follows its ':' may be a password)"
        ) from None
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(
            "REDIS_URL must start with redis://, rediss://, unix:// or redis+sentinel://, "
            f"got {redact_url(url)}"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"REDIS_URL has no host: {redact_url(url)}")
