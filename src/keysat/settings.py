"""Every setting, read once from the environment (and an optional `.env` file).

Parsing is strict and fails fast: a bad value raises `SettingsError` whose message is a
single line naming the variable and the rule it broke (config.md section 1).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ADMIN_KEY_MIN_LENGTH = 32
ADMIN_KEY_FILE_NAME = "admin-api-key"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_DURATION = re.compile(r"^(\d+)([smhd])$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# Keysat-era names read when the KEYSAT_* name is unset.
_LEGACY = {
    "KEYSAT_ADMIN_API_KEY": "LICENSING_ADMIN_API_KEY",
    "KEYSAT_BIND": "LICENSING_BIND",
    "KEYSAT_DB_PATH": "LICENSING_DB_PATH",
    "KEYSAT_PUBLIC_URL": "LICENSING_PUBLIC_URL",
    "KEYSAT_OPERATOR_NAME": "LICENSING_OPERATOR_NAME",
}

RATE_SOURCES = ("kraken", "coinbase", "coingecko")

RATE_LIMIT_DEFAULTS = {
    "validate": "60/60s",
    "heartbeat": "60/1h",
    "activate": "10/1h",
    "recover": "10/60s",
    "login": "5/15m",
    "redeem": "10/60s",
    "purchase": "30/60s",
    "preview": "30/60s",
}


class SettingsError(Exception):
    """A configuration value is invalid; the message names the variable."""


@dataclass(frozen=True)
class RateLimit:
    capacity: int
    period_seconds: int

    @property
    def refill_per_second(self) -> float:
        return self.capacity / self.period_seconds


@dataclass(frozen=True)
class BTCPaySettings:
    """config.md 3.5: where BTCPay is, for us, for the operator's browser and for buyers."""

    url: str | None = None
    browser_url: str | None = None
    public_url: str | None = None
    api_key: str | None = None
    store_id: str | None = None
    webhook_secret: str | None = None

    @property
    def seed_complete(self) -> bool:
        return bool(self.url and self.api_key and self.store_id and self.webhook_secret)

    @property
    def authorize_base(self) -> str | None:
        return self.browser_url or self.url

    @property
    def checkout_base(self) -> str | None:
        """Only an explicitly configured public or browser URL rewrites checkout links."""
        return self.public_url or self.browser_url


@dataclass(frozen=True)
class Settings:
    admin_api_key: str | None
    env: Literal["production", "development"]
    sandbox_mode: bool
    bind_host: str
    bind_port: int
    data_dir: Path
    database_url: str
    public_url: str
    operator_name: str | None
    trusted_proxies: tuple[IPNetwork, ...]
    allowed_redirect_origins: tuple[str, ...]
    cookie_secure: bool
    metrics_token: str | None
    self_license: str | None
    license_file: Path
    workers: bool
    log_level: Literal["debug", "info", "warning", "error"]
    log_format: Literal["text", "json"]
    rate_limits: Mapping[str, RateLimit | None] = field(default_factory=dict)
    rate_sources: tuple[str, ...] = RATE_SOURCES
    rate_cache_ttl_seconds: int = 60
    kraken_url: str = "https://api.kraken.com"
    coinbase_url: str = "https://api.coinbase.com"
    coingecko_url: str = "https://api.coingecko.com"
    btcpay: BTCPaySettings = field(default_factory=BTCPaySettings)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir / ADMIN_KEY_FILE_NAME

    def rate_limit(self, name: str) -> RateLimit | None:
        return self.rate_limits.get(name)


class _Env:
    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def get(self, name: str) -> str | None:
        value = self._raw(name)
        if value is None and name in _LEGACY:
            value = self._raw(_LEGACY[name])
        return value

    def _raw(self, name: str) -> str | None:
        value = self._values.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def bool(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise SettingsError(
            f"{name}: expected a boolean (true/false, 1/0, yes/no, on/off), got {value!r}"
        )

    def url(self, name: str) -> str | None:
        value = self.get(name)
        if value is None:
            return None
        value = value.rstrip("/")
        if not (value.startswith("http://") or value.startswith("https://")):
            raise SettingsError(f"{name}: must start with http:// or https://, got {value!r}")
        if not urlsplit(value).hostname:
            raise SettingsError(f"{name}: must include a host name, got {value!r}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered not in choices:
            raise SettingsError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
        return lowered


def parse_duration(name: str, text: str) -> int:
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise SettingsError(
            f"{name}: expected a positive duration such as 90s, 15m, 1h or 2d, got {text!r}"
        )
    return int(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def parse_rate_limit(name: str, text: str) -> RateLimit | None:
    if text.strip().lower() == "off":
        return None
    count, sep, period = text.strip().partition("/")
    if not sep or not count.isdigit() or int(count) <= 0:
        raise SettingsError(f"{name}: expected <N>/<duration> such as 60/60s, or off, got {text!r}")
    return RateLimit(capacity=int(count), period_seconds=parse_duration(name, period))


def parse_bind(name: str, text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise SettingsError(f"{name}: expected [ipv6]:port, got {text!r}")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise SettingsError(f"{name}: expected host:port (IPv6 in brackets), got {text!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{name}: port must be 1-65535, got {text!r}")
    return host, int(port)


def _origin(name: str, text: str) -> str:
    parts = urlsplit(text.strip().rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise SettingsError(f"{name}: expected origins like https://shop.example.com, got {text!r}")
    return normalize_origin(parts.scheme, parts.hostname, parts.port)


def normalize_origin(scheme: str, host: str, port: int | None) -> str:
    scheme = scheme.lower()
    default_port = 443 if scheme == "https" else 80
    suffix = "" if port in (None, default_port) else f":{port}"
    return f"{scheme}://{host.lower()}{suffix}"


def _database_url(env: _Env, data_dir: Path | None) -> tuple[str, Path]:
    url = env.get("KEYSAT_DATABASE_URL")
    db_path = env.get("KEYSAT_DB_PATH")
    if url is None and db_path is not None:
        url = f"sqlite:///{db_path}"
    if url is None:
        directory = data_dir or Path("./data")
        return f"sqlite+aiosqlite:///{directory / 'keysat.db'}", directory
    if url.startswith("sqlite:///"):
        file_path = Path(url.removeprefix("sqlite:///"))
        if not file_path.name:
            raise SettingsError("KEYSAT_DATABASE_URL: sqlite URL must name a file")
        return f"sqlite+aiosqlite:///{file_path}", data_dir or file_path.parent
    if url.startswith(("postgresql://", "postgres://")):
        rest = url.split("://", 1)[1]
        return f"postgresql+asyncpg://{rest}", data_dir or Path("./data")
    raise SettingsError(
        "KEYSAT_DATABASE_URL: must start with sqlite:/// or postgresql://, "
        f"got scheme {url.split(':', 1)[0]!r}"
    )


def load_settings(environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    values: dict[str, str] = {}
    if dotenv and Path(".env").is_file():
        values.update({k: v for k, v in dotenv_values(".env").items() if v is not None})
    values.update(os.environ if environ is None else environ)
    env = _Env(values)

    admin_key = env.get("KEYSAT_ADMIN_API_KEY")
    if admin_key is not None and len(admin_key) < ADMIN_KEY_MIN_LENGTH:
        raise SettingsError(
            f"KEYSAT_ADMIN_API_KEY: must be at least {ADMIN_KEY_MIN_LENGTH} characters"
        )

    mode = env.choice("KEYSAT_ENV", "production", ("production", "development"))
    sandbox = env.bool("KEYSAT_SANDBOX_MODE", False) or mode == "development"

    host, port = parse_bind("KEYSAT_BIND", env.get("KEYSAT_BIND") or "0.0.0.0:8080")

    explicit_dir = env.get("KEYSAT_DATA_DIR")
    database_url, data_dir = _database_url(env, Path(explicit_dir) if explicit_dir else None)

    public_url = env.url("KEYSAT_PUBLIC_URL") or f"http://localhost:{port}"

    proxies: list[IPNetwork] = []
    for item in (env.get("KEYSAT_TRUSTED_PROXIES") or "").split(","):
        if item.strip():
            try:
                proxies.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise SettingsError(
                    f"KEYSAT_TRUSTED_PROXIES: {item.strip()!r} is not an IP address or CIDR network"
                ) from None

    origins = tuple(
        _origin("KEYSAT_ALLOWED_REDIRECT_ORIGINS", item)
        for item in (env.get("KEYSAT_ALLOWED_REDIRECT_ORIGINS") or "").split(",")
        if item.strip()
    )

    cookie = env.choice("KEYSAT_COOKIE_SECURE", "auto", ("auto", *_TRUE, *_FALSE))
    cookie_secure = public_url.startswith("https://") if cookie == "auto" else cookie in _TRUE

    all_limits_on = env.bool("KEYSAT_RATE_LIMITS", True)
    limits: dict[str, RateLimit | None] = {}
    for name, default in RATE_LIMIT_DEFAULTS.items():
        var = f"KEYSAT_RATE_LIMIT_{name.upper()}"
        parsed = parse_rate_limit(var, env.get(var) or default)
        limits[name] = parsed if all_limits_on else None

    license_file = env.get("KEYSAT_LICENSE_FILE")

    sources_text = (env.get("KEYSAT_RATE_SOURCES") or ",".join(RATE_SOURCES)).lower()
    sources: tuple[str, ...] = ()
    if sources_text.strip() != "none":
        sources = tuple(item.strip() for item in sources_text.split(",") if item.strip())
        unknown = [item for item in sources if item not in RATE_SOURCES]
        if unknown:
            raise SettingsError(
                f"KEYSAT_RATE_SOURCES: unknown source {unknown[0]!r}; "
                f"use a comma-separated list of {', '.join(RATE_SOURCES)}, or none"
            )
    ttl_text = env.get("KEYSAT_RATE_CACHE_TTL")
    rate_ttl = parse_duration("KEYSAT_RATE_CACHE_TTL", ttl_text) if ttl_text else 60

    btcpay = BTCPaySettings(
        url=env.url("BTCPAY_URL"),
        browser_url=env.url("BTCPAY_BROWSER_URL"),
        public_url=env.url("BTCPAY_PUBLIC_URL"),
        api_key=env.get("BTCPAY_API_KEY"),
        store_id=env.get("BTCPAY_STORE_ID"),
        webhook_secret=env.get("BTCPAY_WEBHOOK_SECRET"),
    )

    return Settings(
        admin_api_key=admin_key,
        env=mode,  # type: ignore[arg-type]
        sandbox_mode=sandbox,
        bind_host=host,
        bind_port=port,
        data_dir=data_dir,
        database_url=database_url,
        public_url=public_url,
        operator_name=env.get("KEYSAT_OPERATOR_NAME"),
        trusted_proxies=tuple(proxies),
        allowed_redirect_origins=origins,
        cookie_secure=cookie_secure,
        metrics_token=env.get("KEYSAT_METRICS_TOKEN"),
        self_license=env.get("KEYSAT_LICENSE"),
        license_file=Path(license_file) if license_file else data_dir / "keysat-license.txt",
        workers=env.bool("KEYSAT_WORKERS", True),
        log_level=env.choice(  # type: ignore[arg-type]
            "KEYSAT_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
        ),
        log_format=env.choice("KEYSAT_LOG_FORMAT", "text", ("text", "json")),  # type: ignore[arg-type]
        rate_limits=limits,
        rate_sources=sources,
        rate_cache_ttl_seconds=rate_ttl,
        kraken_url=env.url("KEYSAT_KRAKEN_URL") or "https://api.kraken.com",
        coinbase_url=env.url("KEYSAT_COINBASE_URL") or "https://api.coinbase.com",
        coingecko_url=env.url("KEYSAT_COINGECKO_URL") or "https://api.coingecko.com",
        btcpay=btcpay,
    )
