"""Shared library of the Bricqs engine: schemas, ids, keys, settings and storage."""
