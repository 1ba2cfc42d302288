-- A streak's active periods were one row each in streak_periods: about one row per event
-- with the bench's 20 rules (three streaks), read back whole whenever a run gained a
-- period, and kept forever (retention covers events and facts only), so a daily streak
-- grew its table by a row per participant per day. They are now a multirange on the
-- run's state row: one range per run of consecutive periods (PostgreSQL merges adjacent
-- ones), added with `+`, a union, so adding a period twice adds it once. The state row
-- was written in the same transaction whenever a period was new; it now carries them.
ALTER TABLE streak_state ADD COLUMN periods int4multirange NOT NULL DEFAULT '{}';

UPDATE streak_state s SET periods = p.periods
FROM (
    SELECT project_id, environment, streak_code, participant_id,
           range_agg(int4range(period_index, period_index, '[]')) AS periods
    FROM streak_periods
    GROUP BY project_id, environment, streak_code, participant_id
) p
WHERE s.project_id = p.project_id AND s.environment = p.environment
  AND s.streak_code = p.streak_code AND s.participant_id = p.participant_id;

-- Periods without a state row cannot be made (both were written in one transaction). Were
-- there any, they are kept: readers walk the periods (`streak_runs.walk`), and the run
-- fields here are rewritten by the pair's next period.
INSERT INTO streak_state (project_id, environment, streak_code, participant_id,
    last_index, last_run_length, longest, timezone, periods)
SELECT project_id, environment, streak_code, participant_id, max(period_index), 1, 1, 'UTC',
       range_agg(int4range(period_index, period_index, '[]'))
FROM streak_periods
GROUP BY project_id, environment, streak_code, participant_id
ON CONFLICT DO NOTHING;

DROP TABLE streak_periods;
