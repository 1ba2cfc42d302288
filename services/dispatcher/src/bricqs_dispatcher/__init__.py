"""The webhook dispatcher: delivers the outbox the mechanics write (SPEC §11)."""
