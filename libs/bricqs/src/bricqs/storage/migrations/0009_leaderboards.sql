-- Leaderboards kept incrementally (issue 14). PostgreSQL holds each run's standings, written
-- in the transaction that writes the ledger or the criterion progress; a Redis sorted set
-- per board, run and group mirrors them for reads (bricqs.storage.standings).

-- One row per (board, run, participant). `run` is the run's period index in the board's
-- zone (0 for an all-time board). Rows of a finished run are never written again: they
-- are its final standings.
CREATE TABLE leaderboard_scores (
    project_id      text NOT NULL,
    environment     text NOT NULL,
    leaderboard     text NOT NULL,
    run             integer NOT NULL,
    participant_id  text NOT NULL,
    score           double precision NOT NULL,
    reached_at      timestamptz NOT NULL,
    -- The participant's group on a board with `group_by` ('' otherwise), as it was in
    -- this run: a finished run keeps the groups it ended with.
    group_value     text NOT NULL DEFAULT '',
    PRIMARY KEY (project_id, environment, leaderboard, run, participant_id)
);

-- Which definition (its shape: metric, criterion, period, zone, grouping) a board's
-- current standings were built for; a board with no row, or another shape, is not kept
-- until it is (re)built.
CREATE TABLE leaderboard_builds (
    project_id   text NOT NULL,
    environment  text NOT NULL,
    leaderboard  text NOT NULL,
    shape        text NOT NULL,
    built_at     timestamptz NOT NULL,
    PRIMARY KEY (project_id, environment, leaderboard)
);

-- The runs a board has had standings in, for GET /leaderboards/{code}/runs.
CREATE TABLE leaderboard_runs (
    project_id   text NOT NULL,
    environment  text NOT NULL,
    leaderboard  text NOT NULL,
    run          integer NOT NULL,
    starts_at    timestamptz,
    ends_at      timestamptz,
    finished_at  timestamptz,          -- when its leaderboard.finished facts were emitted
    PRIMARY KEY (project_id, environment, leaderboard, run)
);
