-- Batch reads of the mechanics look rows up key by key (storage/mechanics.py). When the
-- planner's statistics say a tenant has few rows (a table that grew since it was last
-- analysed, or a new tenant growing fast) every index on (project_id, environment, ...)
-- looks equally cheap, and it may pick one that does not hold the whole key, then filter
-- the tenant's rows once per key: seconds per batch. So every index such a lookup can
-- use holds the whole key.

-- Ranking reads (criterion, bucket) still use it; lookups now match all of its columns.
DROP INDEX criterion_progress_ranking;
CREATE INDEX criterion_progress_ranking
    ON criterion_progress (project_id, environment, criterion_id, bucket, participant_id);

-- What a participant earned from a capped rule in one cap period (`earned_in_cap_buckets`).
CREATE INDEX points_ledger_cap_usage
    ON points_ledger (project_id, environment, source, participant_id, cap_bucket)
    INCLUDE (amount) WHERE cap_bucket IS NOT NULL;
