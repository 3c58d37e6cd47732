"""Broker and backend URLs: parsing, validation and masking of passwords."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from rqueue.exceptions import ConfigurationError

T = TypeVar("T")

DEFAULT_SQLITE_URL = "sqlite:///rqueue.sqlite3"


def mask_password(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for banners, logs, errors, reprs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{user}:***@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def describe(url: str) -> str:
    """How to show a URL to a person: password masked, an SQLite path made absolute (so two
    processes in different directories visibly disagree)."""
    if url.startswith("sqlite:///"):
        try:
            return f"sqlite:///{sqlite_path(url, 'url')}"
        except ConfigurationError:
            return url
    return mask_password(url)


class Schemes(Generic[T]):
    """One role's URL schemes (brokers, result backends): what each names, and what opens it.

    Args:
        setting: The setting these URLs come from, for errors (``broker_url``).
        supported: ``{scheme: (what it names, factory)}``; the factory takes the URL and the role's arguments.
        planned: ``{scheme: product}`` of schemes known but not available for this role: a clear error.
    """

    def __init__(
        self, setting: str, supported: Mapping[str, tuple[str, Callable[..., T]]], planned: Mapping[str, str]
    ) -> None:
        self.setting = setting
        self.supported = dict(supported)
        self.planned = dict(planned)

    def scheme_of(self, url: str, setting: str | None = None) -> str:
        """The URL's scheme, or a ConfigurationError listing the supported schemes."""
        setting = setting or self.setting
        supported = ", ".join(f"{s}://" for s in self.supported)
        if not isinstance(url, str) or "://" not in url:
            raise ConfigurationError(
                f"{setting}: {mask_password(str(url))!r} is not a URL; supported schemes: {supported}"
            )
        scheme = url.split("://", 1)[0].lower()
        if scheme in self.supported:
            return scheme
        if scheme in self.planned:
            raise ConfigurationError(
                f"{setting}: the {scheme}:// scheme ({self.planned[scheme]}) is not available in this version; "
                f"supported schemes: {supported}"
            )
        raise ConfigurationError(
            f"{setting}: unknown URL scheme {scheme!r} in {mask_password(url)!r}; supported schemes: {supported}"
        )

    def open(self, url: str, *args: Any, **kwargs: Any) -> T:
        """What ``url`` names, opened by its scheme's factory."""
        return self.supported[self.scheme_of(url)][1](url, *args, **kwargs)


def sqlite_path(url: str, setting: str) -> str:
    """Absolute file path of an ``sqlite://`` URL (relative paths resolve against the current directory)."""
    rest = url.split("://", 1)[1]
    if not rest.startswith("/") or rest in ("/", ""):
        raise ConfigurationError(
            f"{setting}: {url!r} names no file; write sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = rest[1:]  # sqlite:///x.db -> "x.db"; sqlite:////tmp/x.db -> "/tmp/x.db"
    if path in (":memory:", ""):
        raise ConfigurationError(
            f"{setting}: an in-memory SQLite database cannot be shared by workers and clients; name a file"
        )
    path = path.split("?", 1)[0]
    return os.path.abspath(path)


#: Query parameters that would let redis-py and the Rust client read one URL differently (the Rust
#: client takes a TCP URL's db from its path only, a unix URL's credentials from ``user``/``pass``).
_AMBIGUOUS_TCP_QUERY = frozenset({"db", "user", "pass", "username", "password"})


def redis_server_of(url: str) -> tuple[object, ...] | None:
    """Which Redis server and database ``url`` names, normalized so two spellings of one database
    compare equal (``redis://h`` = ``redis://h:6379/0``); None when this cannot be told for sure
    (the Rust client and redis-py might read the URL differently), so callers assume "different".
    Host names are not resolved: ``localhost`` and ``127.0.0.1`` stay different."""
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query, keep_blank_values=True)
        scheme = parts.scheme.lower()
        if scheme in ("unix", "redis+unix"):
            dbs = query.get("db", ["0"])
            if not parts.path or len(dbs) != 1:
                return None
            return ("unix", os.path.normpath(parts.path), int(dbs[0] or 0))
        if scheme not in ("redis", "rediss") or _AMBIGUOUS_TCP_QUERY & {k.lower() for k in query}:
            return None
        db = parts.path.strip("/")
        return (
            scheme,
            (parts.hostname or "localhost").lower(),
            parts.port or 6379,
            int(db) if db else 0,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password is not None else None,
        )
    except ValueError:
        return None


#: The TLS options of a ``rediss://`` URL's query (kombu's names), and ``ssl_cert_reqs``'s spellings.
REDIS_TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs")
_CERT_REQS = {
    "required": "required",
    "cert_required": "required",
    "optional": "optional",
    "cert_optional": "optional",
    "none": "none",
    "cert_none": "none",
}


def redis_py_url(url: str) -> tuple[str, dict[str, Any]]:
    """Split a Redis URL for ``redis.Redis.from_url``: the URL without rqueue's ``ssl_*`` options,
    and those options as redis-py keyword arguments (``ssl_cert_reqs`` spelled as redis-py wants it).

    The rules are the Rust transport's: ``ssl_*`` options only on ``rediss://``, only the known
    ones, ``ssl_cert_reqs`` in ``required``/``optional``/``none`` (or ``CERT_REQUIRED``, ...),
    and ``ssl_ca_certs`` naming a readable file. Verification is on unless ``ssl_cert_reqs=none``.
    """
    parts = urlsplit(url)
    tls = parts.scheme.lower() == "rediss"
    kept: list[tuple[str, str]] = []
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if not key.startswith("ssl_"):
            kept.append((key, value))
            continue
        where = mask_password(url)
        if not tls:
            raise ConfigurationError(f"{where}: {key} only applies to TLS connections; use a rediss:// URL")
        if key == "ssl_cert_reqs":
            reqs = _CERT_REQS.get(value.strip().lower())
            if reqs is None:
                raise ConfigurationError(f"{where}: ssl_cert_reqs={value!r} is not one of required, optional, none")
            options[key] = reqs
        elif key == "ssl_ca_certs":
            if not value:
                raise ConfigurationError(f"{where}: ssl_ca_certs is empty; name a PEM file of CA certificates")
            options[key] = value
        else:
            raise ConfigurationError(
                f"{where}: unknown TLS option {key}; rediss:// URLs take {', '.join(REDIS_TLS_OPTIONS)}"
            )
    if tls:
        options.setdefault("ssl_cert_reqs", "required")
        ca_certs = options.get("ssl_ca_certs")
        if options["ssl_cert_reqs"] == "none":
            options.pop("ssl_ca_certs", None)
        elif ca_certs is not None and not os.access(ca_certs, os.R_OK):
            raise ConfigurationError(f"{mask_password(url)}: ssl_ca_certs={ca_certs}: cannot read it")
    if not options:
        return url, options
    return urlunsplit(parts._replace(query=urlencode(kept))), options


class AmqpParams(NamedTuple):
    """Where an ``amqp://`` URL points, by kombu's rules (what ``kombu.Connection(url).info()`` gives)."""

    host: str
    port: int
    userid: str
    password: str
    virtual_host: str
    tls: bool
    #: ``ssl_ca_certs`` and ``ssl_cert_reqs`` (``amqps://`` only), ``heartbeat`` and ``connect_timeout`` (seconds).
    options: dict[str, str]


#: Schemes of RabbitMQ URLs; ``pyamqp`` is kombu's name for the same transport.
AMQP_SCHEMES = {"amqp": False, "pyamqp": False, "amqps": True}
#: Query options an AMQP URL may carry.
AMQP_OPTIONS = frozenset({"heartbeat", "connect_timeout", "ssl_ca_certs", "ssl_cert_reqs"})
AMQP_PORT = 5672
AMQPS_PORT = 5671


def amqp_params(url: str, setting: str) -> AmqpParams:
    """The connection parameters of an AMQP URL, as kombu reads it.

    ``amqp://`` alone is ``guest:guest@localhost:5672`` on vhost ``/``; the vhost is the path after
    the first slash, percent-decoded, and ``/`` when empty (``amqp://guest@localhost//`` is ``/``);
    a user given without a password gets ``guest``, as kombu gives it. ``amqps://`` is TLS (port 5671).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"{setting}: {mask_password(url)!r} is not a valid URL: {exc}") from None
    tls = AMQP_SCHEMES.get(parts.scheme.lower())
    if tls is None:
        raise ConfigurationError(f"{setting}: {mask_password(url)!r} is not an amqp://, pyamqp:// or amqps:// URL")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - AMQP_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"{setting}: unknown option(s) {', '.join(unknown)} in {mask_password(url)!r}; "
            f"supported: {', '.join(sorted(AMQP_OPTIONS))}"
        )
    if not tls and any(k.startswith("ssl_") for k in options):
        raise ConfigurationError(f"{setting}: ssl_* options need an amqps:// URL, got {mask_password(url)!r}")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return AmqpParams(
        host=parts.hostname or "localhost",
        port=port or (AMQPS_PORT if tls else AMQP_PORT),
        userid=unquote(parts.username) if parts.username else "guest",
        password=unquote(parts.password) if parts.password else "guest",
        virtual_host=unquote(path) or "/",
        tls=tls,
        options=options,
    )


#: Schemes of PostgreSQL URLs (``db+`` is Celery's SQLAlchemy spelling, for result backends).
POSTGRES_SCHEMES = ("postgresql", "postgres", "db+postgresql", "db+postgres")
#: The schema rqueue's tables live in unless the URL says ``?schema=name``.
POSTGRES_DEFAULT_SCHEMA = "rqueue"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def postgres_params(url: str, setting: str) -> tuple[str, str]:
    """``(url, schema)`` of a PostgreSQL URL: the URL as the client takes it (``postgresql://``, without
    rqueue's own ``schema`` option) and the schema named by ``?schema=`` (default ``rqueue``)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in POSTGRES_SCHEMES:
        raise ConfigurationError(
            f"{setting}: {mask_password(url)!r} is not a PostgreSQL URL; "
            "use postgresql://[user[:password]@]host[:port]/database[?schema=rqueue]"
        )
    base, _, query = rest.partition("?")
    kept: list[tuple[str, str]] = []
    schema = POSTGRES_DEFAULT_SCHEMA
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    if not _SCHEMA_NAME.fullmatch(schema) or schema.startswith("pg_"):
        raise ConfigurationError(
            f"{setting}: schema={schema!r} in {mask_password(url)!r} is not usable; use 1 to 63 lowercase "
            "letters, digits and _, not starting with a digit or pg_ (e.g. schema=rqueue)"
        )
    clean = f"postgresql://{base}" + (f"?{urlencode(kept)}" if kept else "")
    return clean, schema
