-- Least privilege (issue 22): what each key may do. Keys made before this migration keep
-- full access (they were minted with it, and their holders rely on it); keys made after
-- it get only `ingest` unless their creator names more, because event keys are the ones
-- that leak (apps, browser code, partners' logs).
ALTER TABLE api_keys ADD COLUMN scopes text[] NOT NULL DEFAULT '{ingest,read,write,admin}';
ALTER TABLE api_keys ALTER COLUMN scopes SET DEFAULT '{ingest}';
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_known
    CHECK (scopes <@ '{ingest,read,write,admin}' AND cardinality(scopes) > 0);

-- Browser origins allowed to call the participant-token routes of a project (CORS);
-- empty: no cross-origin access, the default.
ALTER TABLE projects ADD COLUMN cors_origins text[] NOT NULL DEFAULT '{}';
