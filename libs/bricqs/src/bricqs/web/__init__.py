"""Litestar pieces shared by the HTTP services: problem details, metrics, health."""
