-- Retention (issue 19, docs/retention.md): events and facts partitioned by week, so history
-- older than every project's retention goes as whole partitions (DETACH … CONCURRENTLY,
-- then DROP), never as a long DELETE.
--
-- The partition key is `retention_at`: the row's own time (events: `received_at`, which a
-- redelivered stream entry carries unchanged; facts: `occurred_at`, which a fact with a
-- deterministic id carries unchanged), raised to the lower bound of the oldest partition
-- (`retention_floors`) when older. So a row always has a partition (a client may send a
-- timestamp from 1970, an import may bring years), and a given event or fact always
-- gets the same key for as long as its row exists: the floor only rises past a row when
-- the row's partition is dropped. The unique keys include it, as PostgreSQL requires, and
-- still make a redelivery a no-op.
--
-- Cost: this rewrites both tables (and their indexes) inside the migration's transaction,
-- holding them locked while it runs: fine for the young deployments that exist today;
-- on a large one, plan a maintenance window (about the time of a full table copy).
SET LOCAL timezone = 'UTC';

-- Days of history a project keeps (events by receipt, facts by occurrence); NULL: forever.
ALTER TABLE projects ADD COLUMN retention_days integer DEFAULT 400
    CHECK (retention_days IS NULL OR retention_days >= 7);

-- Partitions live out of the public schema, so whatever lists the public tables
-- (participant data rights) sees each parent once and no partition.
CREATE SCHEMA partitions;

CREATE TABLE retention_floors (
    parent  text PRIMARY KEY,
    floor   timestamptz NOT NULL   -- the lower bound of the parent's oldest partition
);

-- Each table is renamed, made again partitioned (with whatever columns migrations gave
-- it), its rows moved, then its secondary indexes made again. Weekly partitions (Monday
-- 00:00 UTC) from the oldest week held, at most 56 weeks back
-- (older rows go to the oldest one, as later inserts would), to 8 weeks ahead; the
-- processor's retention chore keeps creating them ahead (RETENTION_WEEKS_AHEAD).
DO $$
DECLARE
    this_week constant timestamptz := date_trunc('week', now());
    t record;
    oldest timestamptz;
    bound timestamptz;
    indexes text[];
    definition text;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('events', 'received_at'), ('facts', 'occurred_at'))
             AS v(parent, time_column) LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', t.parent, t.parent || '_unpartitioned');
        EXECUTE format('ALTER TABLE %I RENAME CONSTRAINT %I TO %I', t.parent || '_unpartitioned',
                       t.parent || '_pkey', t.parent || '_unpartitioned_pkey');
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS,'
                       ' retention_at timestamptz NOT NULL) PARTITION BY RANGE (retention_at)',
                       t.parent, t.parent || '_unpartitioned');
        EXECUTE format('SELECT min(%I) FROM %I', t.time_column, t.parent || '_unpartitioned')
            INTO oldest;
        oldest := greatest(date_trunc('week', least(coalesce(oldest, this_week), this_week)),
                           this_week - interval '56 weeks');
        bound := oldest;
        WHILE bound < this_week + interval '8 weeks' LOOP
            EXECUTE format('CREATE TABLE partitions.%I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           t.parent || '_' || to_char(bound, 'YYYYMMDD'), t.parent,
                           bound, bound + interval '7 days');
            bound := bound + interval '7 days';
        END LOOP;
        INSERT INTO retention_floors (parent, floor) VALUES (t.parent, oldest);
        EXECUTE format('INSERT INTO %I SELECT o.*, greatest(o.%I, %L) FROM %I o',
                       t.parent, t.time_column, oldest, t.parent || '_unpartitioned');
        -- The secondary indexes the table has (whichever migrations made them), made
        -- again on the partitioned one once the old one and its names are gone.
        SELECT coalesce(array_agg(indexdef), '{}') INTO indexes FROM pg_indexes
            WHERE schemaname = 'public' AND tablename = t.parent || '_unpartitioned'
              AND indexname <> t.parent || '_unpartitioned_pkey';
        EXECUTE format('DROP TABLE %I', t.parent || '_unpartitioned');
        FOREACH definition IN ARRAY indexes LOOP
            EXECUTE replace(definition, format(' ON public.%I ', t.parent || '_unpartitioned'),
                            format(' ON public.%I ', t.parent));
        END LOOP;
    END LOOP;
END $$;

ALTER TABLE events ADD PRIMARY KEY (project_id, environment, event_id, retention_at);
ALTER TABLE facts ADD PRIMARY KEY (project_id, environment, fact_id, retention_at);
