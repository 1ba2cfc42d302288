"""Shared library of the Bricqs engine: schemas, ids, keys, settings and storage."""

from bricqs import compiled

# Before any other module of the package loads: a compiled module older than its source
# would run code nobody reads (see bricqs.compiled).
compiled.check()
