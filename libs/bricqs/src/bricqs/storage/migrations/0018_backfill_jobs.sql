-- Backfill jobs (issue 19): a badge or challenge applied to the facts stored before it
-- existed. A job walks the tenant's participants in id order, a chunk per transaction;
-- the chunk's outcomes and the job's cursor commit together, so a job taken over after
-- a crash resumes after the last committed chunk and never applies a chunk twice.
-- Runners claim a job with a lease (FOR UPDATE SKIP LOCKED); an expired lease is free.
CREATE TABLE backfill_jobs (
    job_id              text PRIMARY KEY,
    project_id          text NOT NULL REFERENCES projects (project_id),
    environment         text NOT NULL CHECK (environment IN ('live', 'test')),
    kind                text NOT NULL,   -- the definition's kind: badge | challenge
    code                text NOT NULL,
    definition_version  integer NOT NULL,  -- the job stops if the definition changes
    notify              boolean NOT NULL,  -- false: outcomes owe no webhook message
    dry_run             boolean NOT NULL DEFAULT false,  -- count outcomes, write none
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'running', 'done', 'failed')),
    participants_total  bigint NOT NULL DEFAULT 0,
    participants_done   bigint NOT NULL DEFAULT 0,
    outcomes            jsonb NOT NULL DEFAULT '{}',  -- counts by outcome
    cursor              text,            -- the last participant done; NULL once finished
    lease_owner         text,
    lease_until         timestamptz,
    error               text,
    requested_by        text NOT NULL,   -- the API key id that asked
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz
);
CREATE INDEX backfill_jobs_open ON backfill_jobs (created_at)
    WHERE status IN ('pending', 'running');
CREATE INDEX backfill_jobs_tenant ON backfill_jobs (project_id, environment, created_at DESC);
-- One open job per definition (and one dry run): a second request answers the one under way.
CREATE UNIQUE INDEX backfill_jobs_one_open
    ON backfill_jobs (project_id, environment, kind, code, dry_run)
    WHERE status IN ('pending', 'running');

-- Who completed a challenge: 'criteria' (the engine), 'backfill'. A constant default:
-- no table rewrite.
ALTER TABLE challenge_completions ADD COLUMN source text NOT NULL DEFAULT 'criteria';
