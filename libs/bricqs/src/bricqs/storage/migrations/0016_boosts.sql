-- Boosts (issue 18): the boosts an earn entry was multiplied by, as
-- [{"code": "double", "multiplier": 2}, ...] sorted by code; NULL when none applied
-- (most entries: a nullable column costs nothing to add and nothing to store).
ALTER TABLE points_ledger ADD COLUMN boosts jsonb;
