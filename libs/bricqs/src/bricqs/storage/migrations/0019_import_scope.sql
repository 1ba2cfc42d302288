-- Historical imports (issue 19): a key with the `import` scope and without `ingest` may
-- only send batches marked `historical` (docs/import.md), so the key handed to a one-off
-- migration job cannot send live events, whose outcomes notify participants.
-- api_keys is small (one row per key): re-checking it under the table lock is brief.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scopes_known;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_known
    CHECK (scopes <@ '{ingest,read,write,admin,import}' AND cardinality(scopes) > 0);
