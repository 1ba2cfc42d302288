"""Helpers shared by the locustfiles: event generation and the SLO gate."""
