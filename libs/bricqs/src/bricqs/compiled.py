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
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
MANIFEST = PACKAGE / "_compiled.json"
LIBRARY = "bricqs_hot_path"
"""The compiled modules' mypyc group: its runtime, `bricqs_hot_path__mypyc.*.so`, lies
beside the package (in site-packages, among other packages' own mypyc runtimes)."""


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
        if not source.exists() or digest(source) != recorded.get(module):
            found.append(module)
    return found


def digest(source: Path) -> str:
    """What the manifest records of a compiled module's source."""
    return hashlib.sha256(source.read_bytes()).hexdigest()


def record(package: Path, modules: Iterable[str]) -> None:
    """Write the manifest: `modules` (paths from the package's parent folder) were just
    compiled from their sources as they are."""
    root = package.parent
    found = {module: digest(root / module) for module in modules}
    (package / MANIFEST.name).write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")


def check() -> None:
    """Raise StaleExtensions when a compiled module would run other code than its source."""
    if found := stale():
        raise StaleExtensions(
            f"compiled modules older than their sources: {', '.join(found)}. Run `make"
            " compile` (or `python scripts/compile_hot_path.py`) to rebuild them, or"
            " `make clean-compiled` to run the sources"
        )
