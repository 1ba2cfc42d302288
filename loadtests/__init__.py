"""Locust load tests of the ingest service (`make loadtest`; see run.py)."""
