"""What can go wrong with storing a batch, sorted by what it means (see `consumer`)."""

from __future__ import annotations

import psycopg

# Errors that say the data of the batch is at fault, not the database: split the batch.
# An exception that is not psycopg's (our code failing on some event) counts as data too.
DATA_ERRORS: tuple[type[Exception], ...] = (psycopg.DataError, psycopg.IntegrityError)


class DatabaseUnavailable(Exception):
    """PostgreSQL could not run the batch for reasons unrelated to its data."""


class Rejected(Exception):
    """PostgreSQL (or our storage code) refused the data of the batch."""


class TooSlow(Exception):
    """The batch did not commit within BATCH_TIMEOUT_MS (or a statement ran past
    STATEMENT_TIMEOUT_MS): split it, and retry a single event, never dead-letter it."""
