"""The docs say what the code does: every setting is documented, every README command exists."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from bricqs.settings import env_name
from bricqs_api.settings import ApiSettings
from bricqs_dispatcher.settings import DispatcherSettings
from bricqs_ingest.settings import IngestSettings
from bricqs_processor.settings import ProcessorSettings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "settings", [IngestSettings, ProcessorSettings, ApiSettings, DispatcherSettings]
)
def test_every_setting_is_in_the_configuration_page(settings: type[msgspec.Struct]) -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    missing = [
        env_name(f.name)
        for f in msgspec.structs.fields(settings)
        if f"`{env_name(f.name)}`" not in page
    ]
    assert missing == []


def test_readme_gives_the_two_commands_and_only_existing_make_targets() -> None:
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make run" in readme and "make test" in readme
    targets = set(re.findall(r"^([a-z0-9-]+):", makefile, re.M))
    mentioned = set(re.findall(r"\bmake ([a-z][a-z0-9-]*)", readme))
    assert {"run", "test"} <= mentioned <= targets
