"""All SQL of the engine lives in this package; services call its functions."""
