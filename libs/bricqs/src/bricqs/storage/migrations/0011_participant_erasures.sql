-- Participant data rights (issue 19): one row per erasure request, the proof that it was
-- asked for and done. It holds no personal data: the participant is named only by a
-- SHA-256 digest of (project, environment, participant id), which lets a repeated
-- request find its earlier answer without keeping the id itself.
CREATE TABLE participant_erasures (
    erasure_id        text PRIMARY KEY,
    project_id        text NOT NULL REFERENCES projects (project_id),
    environment       text NOT NULL CHECK (environment IN ('live', 'test')),
    participant_hash  bytea NOT NULL,
    requested_by      text NOT NULL,          -- the API key id that asked
    requested_at      timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,            -- NULL while rows or keys may remain
    rows_erased       bigint NOT NULL DEFAULT 0,
    keys_erased       bigint NOT NULL DEFAULT 0
);
CREATE INDEX participant_erasures_participant
    ON participant_erasures (project_id, environment, participant_hash, requested_at);
-- At most one erasure in progress per participant: concurrent requests share it.
CREATE UNIQUE INDEX participant_erasures_open
    ON participant_erasures (project_id, environment, participant_hash)
    WHERE completed_at IS NULL;
