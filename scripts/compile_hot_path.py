"""Compile the mechanics' hot path to C extensions with mypyc, beside its sources.

The processor spends most of its CPU in these modules (matching, judging, streaks,
points, and the storage code that turns a round into statements' arrays). They are the
same typed Python that mypy checks strictly; mypyc compiles them as they are, and
`bench.drain_ab` (a plain and a compiled tree side by side) measures what that gains.

    python scripts/compile_hot_path.py            # the workspace's libs/bricqs/src
    python scripts/compile_hot_path.py --python /app/.venv/bin/python   # an installed copy
    python scripts/compile_hot_path.py --clean

`make compile` (which `make run`, `make test` and `make bench` call) compiles the
workspace's sources in place; the images' build stage compiles the copy installed in the
service's virtualenv (`--python`: the interpreter that will run it, whose site-packages
hold the package and the libraries it imports). Python imports an extension module before
the `.py` beside it, so the script records which source each extension came from, in the
manifest `bricqs.compiled` defines and reads: the package refuses to import a stale
extension, and running this again rebuilds only when a source changed. Needs a C compiler
and Python's headers (scripts/install-deps.sh), mypy and setuptools (the dev group).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

# The modules a batch spends its time in (py-spy on a 20-rule drain), and the modules
# they call per fact. Only modules whose every line mypy checks strictly belong here.
HOT_PATH = (
    "bricqs/ids.py",
    "bricqs/facts.py",
    "bricqs/pipeline.py",
    "bricqs/mechanics/apply.py",
    "bricqs/mechanics/boosts.py",
    "bricqs/mechanics/conditions.py",
    "bricqs/mechanics/evaluation.py",
    "bricqs/mechanics/judging.py",
    "bricqs/mechanics/matching.py",
    "bricqs/mechanics/rounds.py",
    "bricqs/mechanics/ruleset.py",
    "bricqs/mechanics/standings.py",
    "bricqs/mechanics/streak_runs.py",
    "bricqs/mechanics/streak_updates.py",
    "bricqs/mechanics/windows.py",
    "bricqs/storage/arrays.py",
    "bricqs/storage/awards.py",
    "bricqs/storage/balances.py",
    "bricqs/storage/events.py",
    "bricqs/storage/ledger.py",
    "bricqs/storage/progress.py",
    "bricqs/storage/streaks.py",
)
ROOT = Path(__file__).resolve().parent.parent


def site_packages(python: str) -> Path:
    """Where `python` installs pure-Python packages."""
    found = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(found.stdout.strip())


def manifest_module(root: Path) -> ModuleType:
    """`bricqs.compiled` of the package under `root`, loaded from its file: importing the
    package would run its check, which refuses the very extensions this rebuilds (and
    this script's interpreter need not have the package at all)."""
    spec = importlib.util.spec_from_file_location("_bricqs_compiled", root / "bricqs/compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def extensions(root: Path, compiled: ModuleType) -> list[Path]:
    """Every extension module this script may have left under `root`: the modules' and
    their group's runtime (not other packages' mypyc runtimes beside it)."""
    return [*root.glob(f"{compiled.LIBRARY}__mypyc.*.so"), *(root / "bricqs").rglob("*.so")]


def up_to_date(root: Path, compiled: ModuleType) -> bool:
    built = any(root.glob(f"{compiled.LIBRARY}__mypyc.*.so")) and all(
        any((root / module).parent.glob(Path(module).stem + ".*.so")) for module in HOT_PATH
    )
    wanted = {module: compiled.digest(root / module) for module in HOT_PATH}
    return built and compiled.compiled_modules(root / "bricqs") == wanted


def clean(root: Path, compiled: ModuleType) -> None:
    for path in extensions(root, compiled):
        path.unlink()
    (root / "bricqs" / compiled.MANIFEST.name).unlink(missing_ok=True)


def compile_hot_path(root: Path, python: str, compiled: ModuleType) -> None:
    from mypyc.build import mypycify  # the dev group's; imported here, for --help without it
    from setuptools import setup

    clean(root, compiled)
    with tempfile.TemporaryDirectory(prefix="bricqs-mypyc-") as work:
        # Compiled in a copy of the package: from a site-packages folder, mypy would take
        # every library beside it for sources of ours and check them too.
        source, build = Path(work) / "src", Path(work) / "build"
        shutil.copytree(root / "bricqs", source / "bricqs", ignore=shutil.ignore_patterns("*.so"))
        cwd = Path.cwd()
        os.chdir(source)  # mypyc names modules by their paths from here
        try:
            modules = mypycify(
                [
                    *HOT_PATH,
                    # Types of the libraries the modules import, from the interpreter that
                    # will run them (the workspace's or the image's virtualenv).
                    "--python-executable",
                    python,
                ],
                opt_level="3",
                target_dir=str(build),
                group_name=compiled.LIBRARY,
            )
            setup(
                name="bricqs-hot-path",
                ext_modules=modules,
                script_args=[
                    *("--quiet", "build_ext", "--inplace"),
                    *("--build-temp", str(build), "--build-lib", str(build)),
                ],
            )
        finally:
            os.chdir(cwd)
        # One extension per module, beside its source, and the group's runtime, beside
        # the package.
        for extension in source.rglob("*.so"):
            shutil.copy2(extension, root / extension.relative_to(source))
    compiled.record(root / "bricqs", HOT_PATH)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--python", help="compile the package installed for this interpreter, not the sources"
    )
    parser.add_argument("--clean", action="store_true", help="remove the extensions")
    args = parser.parse_args()
    python = args.python or sys.executable
    root = ROOT / "libs/bricqs/src" if args.python is None else site_packages(python)
    compiled = manifest_module(root)
    if args.clean:
        clean(root, compiled)
        return 0
    if up_to_date(root, compiled):
        return 0  # every extension is there, from the sources as they are
    print(f"compiling the hot path ({len(HOT_PATH)} modules) with mypyc in {root}")
    compile_hot_path(root, python, compiled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
