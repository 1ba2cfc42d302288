-- Per-project ingest rate limits; NULL means the service's defaults
-- (RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST). They apply to each API key of the project.
ALTER TABLE projects ADD COLUMN rate_limit_per_second double precision
    CHECK (rate_limit_per_second IS NULL OR rate_limit_per_second >= 0);
ALTER TABLE projects ADD COLUMN rate_limit_burst integer
    CHECK (rate_limit_burst IS NULL OR rate_limit_burst >= 100);
