-- Time-driven facts (docs/scheduler.md) and streak freezes (docs/economy.md).

-- Missed periods an admin restored: the run goes on across them as if they were kept.
CREATE TABLE streak_bridges (
    project_id      text NOT NULL,
    environment     text NOT NULL,
    streak_code     text NOT NULL,
    participant_id  text NOT NULL,
    period_index    integer NOT NULL,
    bridged_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, environment, streak_code, participant_id, period_index)
);

-- One row per unbroken run: the period it needs next and when that is judged. The
-- scheduler claims rows by due_at, so its work follows what is due, not the number of
-- participants; a broken run has no row until its participant is active again.
CREATE TABLE streak_deadlines (
    project_id      text NOT NULL,
    environment     text NOT NULL,
    streak_code     text NOT NULL,
    participant_id  text NOT NULL,
    period          integer NOT NULL,
    timezone        text NOT NULL,
    at_risk_at      timestamptz,            -- NULL once emitted, or when the streak has none
    ends_at         timestamptz NOT NULL,
    due_at          timestamptz GENERATED ALWAYS AS (coalesce(at_risk_at, ends_at)) STORED,
    PRIMARY KEY (project_id, environment, streak_code, participant_id)
);
CREATE INDEX streak_deadlines_due ON streak_deadlines (due_at);

-- A fixed-window challenge whose window closed: `challenge.expired` is emitted to its
-- participants with progress in participant order, `after` the last one done, so a
-- crash resumes where the last committed batch stopped.
CREATE TABLE challenge_expiries (
    project_id      text NOT NULL,
    environment     text NOT NULL,
    challenge_code  text NOT NULL,
    ends_at         timestamptz NOT NULL,
    after           text NOT NULL DEFAULT '',
    done            boolean NOT NULL DEFAULT false,
    PRIMARY KEY (project_id, environment, challenge_code, ends_at)
);
