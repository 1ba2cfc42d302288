"""Ingest service: the Events API hot path (HTTP -> validation -> Redis Streams)."""
