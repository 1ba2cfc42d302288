"""Gamification mechanics: definitions, the pure rule engine, and applying it to facts.

`definitions` holds the schemas (validated on write), `conditions` and `windows` compile
them into fast pure callables, `ruleset` indexes a tenant's compiled rules by fact type,
and `apply` runs them inside the transaction that stored the facts.
"""
