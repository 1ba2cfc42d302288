-- criterion_progress is written for every criterion every fact moves (about four rows per
-- event with the bench's 20 rules), so each of its indexes is paid on the hot path. The
-- ranking index (criterion, bucket, participant) had one reader: `criterion_ranking`,
-- which recomputes a criterion leaderboard's standings when a board is first built or
-- its definition changed (kept standings serve every other read). The primary key's
-- prefix (project, environment, criterion) serves that rare read too, reading the
-- criterion's other buckets as well, which the read's sort dominates anyway.
DROP INDEX criterion_progress_ranking;
