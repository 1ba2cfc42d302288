"""Benchmarks: `python -m bench` (the suite, `make bench`) and `bench/rule_engine.py`."""
