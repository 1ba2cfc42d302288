-- A run's deadline (the period whose end decides it next: docs/scheduler.md) was a row of
-- its own in streak_deadlines, written with the run's state in the same transaction:
-- half a row per event more with the bench's 20 rules, and a statement per round. It is
-- now on the state row. `due_at` is what the scheduler claims by; a run with nothing to
-- watch (broken) has none, and the partial index holds only the runs that do, so the
-- scheduler's work still follows what is due, not the number of participants.
ALTER TABLE streak_state
    ADD COLUMN deadline_period integer,  -- NULL: nothing to watch (a broken run)
    ADD COLUMN at_risk_at      timestamptz,  -- NULL once emitted, or when the streak has none
    ADD COLUMN ends_at         timestamptz,
    ADD COLUMN due_at          timestamptz GENERATED ALWAYS AS (coalesce(at_risk_at, ends_at)) STORED;

UPDATE streak_state s
SET deadline_period = d.period, at_risk_at = d.at_risk_at, ends_at = d.ends_at,
    timezone = d.timezone
FROM streak_deadlines d
WHERE s.project_id = d.project_id AND s.environment = d.environment
  AND s.streak_code = d.streak_code AND s.participant_id = d.participant_id;

-- A deadline without a state (never written so: both were written in one transaction)
-- has no active period, so the scheduler would have dropped it: it is dropped here.
DROP TABLE streak_deadlines;

CREATE INDEX streak_state_due ON streak_state (due_at) WHERE due_at IS NOT NULL;
