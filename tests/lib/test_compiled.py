"""The compiled hot path (scripts/compile_hot_path.py): `make test` runs it, and the package
refuses to run an extension built from another version of its source."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import pytest

from bricqs import compiled

EXTENSION = ".cpython-311-x86_64-linux-gnu.so"


def _package(tmp_path: Path, source: str, recorded: str | None) -> Path:
    """A package `bricqs` with one module, its extension (a stand-in file: never loaded)
    and, unless `recorded` is None, a manifest naming that source."""
    package = tmp_path / "bricqs"
    (package / "mechanics").mkdir(parents=True)
    (package / "mechanics" / "judging.py").write_text(source)
    (package / "mechanics" / f"judging{EXTENSION}").write_bytes(b"\x7fELF")
    if recorded is not None:
        digest = hashlib.sha256(recorded.encode()).hexdigest()
        manifest = {"bricqs/mechanics/judging.py": digest}
        (package / "_compiled.json").write_text(json.dumps(manifest))
    return package


def test_an_extension_built_from_its_source_as_it_is_is_not_stale(tmp_path: Path) -> None:
    package = _package(tmp_path, "x = 1\n", recorded="x = 1\n")
    assert compiled.stale(package) == []
    assert list(compiled.compiled_modules(package)) == ["bricqs/mechanics/judging.py"]


def test_a_source_edited_after_compiling_makes_its_extension_stale(tmp_path: Path) -> None:
    package = _package(tmp_path, "x = 2\n", recorded="x = 1\n")
    assert compiled.stale(package) == ["bricqs/mechanics/judging.py"]


def test_an_extension_without_a_record_of_its_source_is_stale(tmp_path: Path) -> None:
    package = _package(tmp_path, "x = 1\n", recorded=None)
    assert compiled.stale(package) == ["bricqs/mechanics/judging.py"]


def test_a_package_without_extensions_is_plain_python(tmp_path: Path) -> None:
    package = tmp_path / "bricqs"
    package.mkdir()
    (package / "ids.py").write_text("x = 1\n")
    assert compiled.stale(package) == []
    assert compiled.compiled_modules(package) == {}


def test_the_tests_run_the_hot_path_compiled_when_make_test_built_it() -> None:
    recorded = compiled.compiled_modules()
    if not recorded:
        if os.environ.get("CI"):
            pytest.fail("CI runs `make test`, which compiles the hot path (make compile)")
        pytest.skip("the hot path is not compiled here: `make compile` builds it")
    assert compiled.stale() == []
    for path in recorded:
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert module.__file__ is not None and module.__file__.endswith(".so"), path


def _compile_script() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "scripts" / "compile_hot_path.py"
    spec = importlib.util.spec_from_file_location("compile_hot_path", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cleaning_a_site_packages_folder_leaves_other_packages_mypyc_runtimes(
    tmp_path: Path,
) -> None:
    """In an image the extensions lie in site-packages, beside other mypyc-compiled
    packages (mypy itself, charset_normalizer) and their runtimes."""
    script = _compile_script()
    package = _package(tmp_path, "x = 1\n", recorded="x = 1\n")
    (package / "compiled.py").write_bytes(Path(compiled.__file__).read_bytes())
    ours = tmp_path / f"{compiled.LIBRARY}__mypyc{EXTENSION}"
    theirs = tmp_path / f"6ec57f84c680d3a3778b__mypyc{EXTENSION}"
    for runtime in (ours, theirs):
        runtime.write_bytes(b"\x7fELF")
    script.clean(tmp_path, script.manifest_module(tmp_path))
    assert theirs.exists()
    assert not ours.exists()
    assert not list(package.rglob("*.so")) and compiled.compiled_modules(package) == {}
