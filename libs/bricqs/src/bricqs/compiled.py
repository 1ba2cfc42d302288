"""Which modules of this package run compiled (mypyc), and a guard against stale ones.

`scripts/compile_hot_path.py` compiles the mechanics' hot path beside its sources and
records, in `_compiled.json`, the source each extension was built from. Python imports an
extension module before the `.py` beside it, so a source edited after compiling would not
run at all, silently. The package refuses to import in that state (`check`, called by
`bricqs/__init__.py`): `make compile` rebuilds, `make clean-compiled` goes back to pure
Python. Without extensions nothing is checked: the package is plain Python.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
MANIFEST = PACKAGE / "_compiled.json"


class StaleExtensions(ImportError):
    """An extension module was built from a source other than the one beside it."""


def compiled_modules(package: Path = PACKAGE) -> dict[str, str]:
    """Compiled module paths (`bricqs/mechanics/judging.py`) -> their sources' sha256."""
    manifest = package / MANIFEST.name
    if not manifest.exists():
        return {}
    found: dict[str, str] = json.loads(manifest.read_text())
    return found


def stale(package: Path = PACKAGE) -> list[str]:
    """The extension modules that do not match the source beside them: built from
    another version of it, or left without a record of where they came from."""
    recorded = compiled_modules(package)
    root = package.parent
    found = []
    for extension in sorted(package.rglob("*.so")):
        source = extension.with_name(extension.name.split(".", 1)[0] + ".py")
        module = source.relative_to(root).as_posix()
        if not source.exists() or _digest(source) != recorded.get(module):
            found.append(module)
    return found


def _digest(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()


def check() -> None:
    """Raise StaleExtensions when a compiled module would run other code than its source."""
    if found := stale():
        raise StaleExtensions(
            f"compiled modules older than their sources: {', '.join(found)}. Run `make"
            " compile` (or `python scripts/compile_hot_path.py`) to rebuild them, or"
            " `make clean-compiled` to run the sources"
        )
