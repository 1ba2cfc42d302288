"""Settings come from environment variables; a bad value names its variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bricqs.settings import SettingsError, describe, load_settings
from bricqs_ingest.settings import IngestSettings


def test_defaults_apply_when_nothing_is_set() -> None:
    settings = load_settings(IngestSettings, {})
    assert settings.redis_timeout_ms == 500
    assert settings.stream_shards == 1


def test_values_are_converted_from_strings() -> None:
    settings = load_settings(
        IngestSettings,
        {"REDIS_TIMEOUT_MS": "250", "STREAM_SHARDS": "4", "AUTH_CACHE_TTL_SECONDS": "1.5"},
    )
    assert (settings.redis_timeout_ms, settings.stream_shards) == (250, 4)
    assert settings.auth_cache_ttl_seconds == 1.5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_TIMEOUT_MS", "soon"),
        ("REDIS_TIMEOUT_MS", "0"),
        ("STREAM_SHARDS", "0"),
        ("RETRY_AFTER_SECONDS", "-1"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings(IngestSettings, {variable: value})


def test_every_setting_is_documented() -> None:
    rows = describe(IngestSettings)
    assert {"REDIS_URL", "DATABASE_URL", "REDIS_TIMEOUT_MS"} <= {r[0] for r in rows}
    assert all(description for _, _, description in rows)


def test_the_service_exits_non_zero_with_a_message_on_a_bad_value() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from bricqs_ingest.app import create_app; create_app()"],
        env={"REDIS_TIMEOUT_MS": "soon", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "REDIS_TIMEOUT_MS" in done.stderr
