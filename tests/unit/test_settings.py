"""Settings: every variable is parsed at start and a bad value names the variable."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from keysat.settings import SettingsError, load_settings

KEY = "k" * 32


def settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings({"KEYSAT_ADMIN_API_KEY": KEY, **env}, dotenv=False)


def error_for(**env: str) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(env, dotenv=False)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults() -> None:
    s = load_settings({}, dotenv=False)
    assert s.admin_api_key is None
    assert (s.bind_host, s.bind_port) == ("0.0.0.0", 8080)
    assert s.database_url == "sqlite+aiosqlite:///data/keysat.db"
    assert s.data_dir == Path("data")
    assert s.public_url == "http://localhost:8080"
    assert s.env == "production" and s.sandbox_mode is False
    assert s.rate_limit("validate") is not None
    assert s.rate_limit("validate").capacity == 60  # type: ignore[union-attr]
    assert s.rate_limit("login").period_seconds == 900  # type: ignore[union-attr]
    assert s.trusted_proxies == ()
    assert s.cookie_secure is False


def test_admin_key_minimum_length() -> None:
    assert "KEYSAT_ADMIN_API_KEY" in error_for(KEYSAT_ADMIN_API_KEY="short")
    assert settings().admin_api_key == KEY


def test_legacy_names_are_fallbacks_and_keysat_names_win() -> None:
    s = load_settings(
        {"LICENSING_ADMIN_API_KEY": "L" * 40, "LICENSING_BIND": "127.0.0.1:9001"}, dotenv=False
    )
    assert s.admin_api_key == "L" * 40
    assert s.bind_port == 9001
    s = load_settings(
        {"LICENSING_BIND": "127.0.0.1:9001", "KEYSAT_BIND": "127.0.0.1:9002"}, dotenv=False
    )
    assert s.bind_port == 9002


def test_empty_values_count_as_unset() -> None:
    assert settings(KEYSAT_BIND="   ").bind_port == 8080


@pytest.mark.parametrize("value", ["nope", "8080", "host:", "host:70000", "[::1]8080"])
def test_bad_bind(value: str) -> None:
    assert error_for(KEYSAT_BIND=value).startswith("KEYSAT_BIND:")


def test_ipv6_bind() -> None:
    s = settings(KEYSAT_BIND="[::]:9000")
    assert (s.bind_host, s.bind_port) == ("::", 9000)


def test_public_url_defaults_to_bind_port_and_loses_trailing_slash() -> None:
    assert settings(KEYSAT_BIND="127.0.0.1:9000").public_url == "http://localhost:9000"
    assert settings(KEYSAT_PUBLIC_URL="https://x.example/").public_url == "https://x.example"
    assert error_for(KEYSAT_PUBLIC_URL="ftp://x").startswith("KEYSAT_PUBLIC_URL:")


def test_database_urls() -> None:
    assert settings(KEYSAT_DATABASE_URL="sqlite:///tmp/a.db").database_url == (
        "sqlite+aiosqlite:///tmp/a.db"
    )
    s = settings(KEYSAT_DATABASE_URL="sqlite:////var/k/a.db")
    assert s.database_url == "sqlite+aiosqlite:////var/k/a.db"
    assert s.data_dir == Path("/var/k")
    pg = settings(KEYSAT_DATABASE_URL="postgresql://u:p@h:5432/db")
    assert pg.database_url == "postgresql+asyncpg://u:p@h:5432/db"
    assert not pg.is_sqlite
    assert error_for(KEYSAT_DATABASE_URL="mysql://x/y").startswith("KEYSAT_DATABASE_URL:")
    assert settings(KEYSAT_DB_PATH="/srv/keysat.db").database_url == (
        "sqlite+aiosqlite:////srv/keysat.db"
    )
    assert settings(KEYSAT_DATA_DIR="/d").database_url == "sqlite+aiosqlite:////d/keysat.db"


def test_environment_and_sandbox() -> None:
    assert settings(KEYSAT_ENV="development").sandbox_mode is True
    assert settings(KEYSAT_SANDBOX_MODE="YES").sandbox_mode is True
    assert settings(KEYSAT_SANDBOX_MODE="off").sandbox_mode is False
    assert error_for(KEYSAT_ENV="staging").startswith("KEYSAT_ENV:")
    assert error_for(KEYSAT_SANDBOX_MODE="maybe").startswith("KEYSAT_SANDBOX_MODE:")


def test_rate_limits() -> None:
    s = settings(KEYSAT_RATE_LIMIT_VALIDATE="5/2m", KEYSAT_RATE_LIMIT_HEARTBEAT="off")
    limit = s.rate_limit("validate")
    assert limit is not None and (limit.capacity, limit.period_seconds) == (5, 120)
    assert s.rate_limit("heartbeat") is None
    everything_off = settings(KEYSAT_RATE_LIMITS="off")
    assert all(everything_off.rate_limit(name) is None for name in ("validate", "activate"))
    for bad in ("5", "0/1s", "5/0s", "5/1w", "x/1s"):
        assert error_for(KEYSAT_RATE_LIMIT_ACTIVATE=bad).startswith("KEYSAT_RATE_LIMIT_ACTIVATE:")


def test_trusted_proxies_and_origins() -> None:
    s = settings(
        KEYSAT_TRUSTED_PROXIES="10.0.0.1, 192.168.0.0/16,::1",
        KEYSAT_ALLOWED_REDIRECT_ORIGINS="HTTPS://Shop.Example:443,http://a.test:8080",
    )
    assert ipaddress.ip_network("192.168.0.0/16") in s.trusted_proxies
    assert s.allowed_redirect_origins == ("https://shop.example", "http://a.test:8080")
    assert error_for(KEYSAT_TRUSTED_PROXIES="10.0.0.x").startswith("KEYSAT_TRUSTED_PROXIES:")
    assert error_for(KEYSAT_ALLOWED_REDIRECT_ORIGINS="https://a/b").startswith(
        "KEYSAT_ALLOWED_REDIRECT_ORIGINS:"
    )


def test_cookie_secure_follows_public_url() -> None:
    assert settings(KEYSAT_PUBLIC_URL="https://x.example").cookie_secure is True
    assert (
        settings(KEYSAT_PUBLIC_URL="https://x.example", KEYSAT_COOKIE_SECURE="false").cookie_secure
        is False
    )
    assert settings(KEYSAT_COOKIE_SECURE="on").cookie_secure is True


def test_operator_name_and_log_settings() -> None:
    s = settings(KEYSAT_OPERATOR_NAME="Acme", KEYSAT_LOG_LEVEL="DEBUG", KEYSAT_LOG_FORMAT="json")
    assert (s.operator_name, s.log_level, s.log_format) == ("Acme", "debug", "json")
    assert error_for(KEYSAT_LOG_FORMAT="xml").startswith("KEYSAT_LOG_FORMAT:")


def test_dotenv_file_is_read_and_real_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        f"KEYSAT_ADMIN_API_KEY={KEY}\nKEYSAT_OPERATOR_NAME=FromFile\nKEYSAT_BIND=127.0.0.1:7000\n"
    )
    monkeypatch.chdir(tmp_path)
    s = load_settings({"KEYSAT_BIND": "127.0.0.1:7001"})
    assert s.operator_name == "FromFile"
    assert s.bind_port == 7001
