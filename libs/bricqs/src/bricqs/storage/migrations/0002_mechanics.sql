-- Mechanics: definitions, progress, points ledger, badges, challenges, streaks.
-- Progress rows are commutative upserts (counts, sums, maxima, sets), so the order in
-- which facts arrive never changes the outcome; awards are unique rows, so they happen once.

CREATE TABLE definitions (
    project_id   text NOT NULL,
    environment  text NOT NULL,
    kind         text NOT NULL,  -- points_rule | badge | challenge | streak | leaderboard | tier
    code         text NOT NULL,
    status       text NOT NULL,
    body         jsonb NOT NULL,
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, environment, kind, code)
);

-- Bumped on every definition write; rule caches poll it to reload within seconds.
CREATE TABLE definition_versions (
    project_id   text NOT NULL,
    environment  text NOT NULL,
    version      bigint NOT NULL,
    PRIMARY KEY (project_id, environment)
);

-- One row per (criterion, participant, bucket). A criterion's id is a digest of its
-- content, so badges, challenges and leaderboards with the same criterion share rows.
CREATE TABLE criterion_progress (
    project_id      text NOT NULL,
    environment     text NOT NULL,
    criterion_id    text NOT NULL,
    participant_id  text NOT NULL,
    bucket          text NOT NULL,  -- 'all', or a period key such as 'd:2026-04-10'
    count           bigint NOT NULL DEFAULT 0,
    sum             double precision NOT NULL DEFAULT 0,
    max             double precision,
    reached_at      timestamptz NOT NULL,  -- when the current value was reached (tie-breaks)
    PRIMARY KEY (project_id, environment, criterion_id, participant_id, bucket)
);
CREATE INDEX criterion_progress_ranking
    ON criterion_progress (project_id, environment, criterion_id, bucket);

CREATE TABLE criterion_distinct (
    project_id      text NOT NULL,
    environment     text NOT NULL,
    criterion_id    text NOT NULL,
    participant_id  text NOT NULL,
    bucket          text NOT NULL,
    value           text NOT NULL,
    first_at        timestamptz NOT NULL,
    PRIMARY KEY (project_id, environment, criterion_id, participant_id, bucket, value)
);

CREATE TABLE points_ledger (
    project_id      text NOT NULL,
    environment     text NOT NULL,
    entry_id        text NOT NULL,
    participant_id  text NOT NULL,
    amount          bigint NOT NULL,  -- positive earns, negative spends
    kind            text NOT NULL,    -- earn | reward | award | deduct
    source          text NOT NULL,    -- 'rule:<code>', 'challenge:<code>', 'manual'
    fact_id         text,             -- the fact that earned it (earn entries)
    idempotency_key text,             -- manual entries: the caller's key
    cap_bucket      text,             -- the rule's cap period, to sum what was earned in it
    reason          text NOT NULL DEFAULT '',
    occurred_at     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, environment, entry_id)
);
CREATE UNIQUE INDEX points_ledger_once_per_fact
    ON points_ledger (project_id, environment, source, fact_id) WHERE fact_id IS NOT NULL;
CREATE UNIQUE INDEX points_ledger_manual_key
    ON points_ledger (project_id, environment, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX points_ledger_participant
    ON points_ledger (project_id, environment, participant_id, occurred_at);
CREATE INDEX points_ledger_time ON points_ledger (project_id, environment, occurred_at);

CREATE TABLE points_balances (
    project_id      text NOT NULL,
    environment     text NOT NULL,
    participant_id  text NOT NULL,
    balance         bigint NOT NULL DEFAULT 0 CHECK (balance >= 0),
    total_earned    bigint NOT NULL DEFAULT 0,
    total_spent     bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, environment, participant_id)
);

CREATE TABLE badge_awards (
    project_id      text NOT NULL,
    environment     text NOT NULL,
    badge_code      text NOT NULL,
    participant_id  text NOT NULL,
    award_key       text NOT NULL,  -- 'once', or the period of a repeatable badge
    source          text NOT NULL,  -- 'criteria', 'manual', 'challenge:<code>'
    fact_id         text,
    awarded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, environment, badge_code, participant_id, award_key)
);

CREATE TABLE challenge_completions (
    project_id      text NOT NULL,
    environment     text NOT NULL,
    challenge_code  text NOT NULL,
    participant_id  text NOT NULL,
    fact_id         text,
    completed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, environment, challenge_code, participant_id)
);

-- Every period in which a participant was active for a streak; runs are computed from it.
CREATE TABLE streak_periods (
    project_id      text NOT NULL,
    environment     text NOT NULL,
    streak_code     text NOT NULL,
    participant_id  text NOT NULL,
    period_index    integer NOT NULL,
    PRIMARY KEY (project_id, environment, streak_code, participant_id, period_index)
);

CREATE TABLE streak_state (
    project_id       text NOT NULL,
    environment      text NOT NULL,
    streak_code      text NOT NULL,
    participant_id   text NOT NULL,
    last_index       integer NOT NULL,  -- the latest active period
    last_run_length  integer NOT NULL,  -- length of the run of periods ending at last_index
    longest          integer NOT NULL,
    timezone         text NOT NULL,
    PRIMARY KEY (project_id, environment, streak_code, participant_id)
);

-- System facts carry the event that started their chain; find them by it.
CREATE INDEX facts_type_time ON facts (project_id, environment, fact_type, occurred_at);
