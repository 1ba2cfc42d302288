"""How commands in another terminal find the servers of `make run`.

`make run` writes its Redis and PostgreSQL URLs to `local-stack.json` in its data folder
(`BRICQS_DATA_DIR`, default `.data`) once they answer, and removes the file when it stops;
`bricqs-admin` reads it when no URL is given.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

FILE_NAME = "local-stack.json"


class LocalStack(msgspec.Struct, frozen=True, kw_only=True):
    """The servers a running `make run` serves from."""

    database_url: str
    redis_url: str


def stack_file(data_dir: Path | None = None) -> Path:
    """Where the file is: in `data_dir`, else in `BRICQS_DATA_DIR` or `.data`."""
    if data_dir is None:
        data_dir = Path(os.environ.get("BRICQS_DATA_DIR") or ".data")
    return data_dir / FILE_NAME


def write_local_stack(stack: LocalStack, data_dir: Path) -> Path:
    """Announce a running local stack; return the file written."""
    path = stack_file(data_dir)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(stack)) + b"\n")
    return path


def read_local_stack(data_dir: Path | None = None) -> tuple[LocalStack, Path] | None:
    """The running local stack and the file that names it, or None when there is none."""
    path = stack_file(data_dir)
    try:
        return msgspec.json.decode(path.read_bytes(), type=LocalStack), path
    except (OSError, msgspec.DecodeError):
        return None
