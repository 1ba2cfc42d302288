-- The console's overview (issue 17): facts made per minute, by type, kept by the statement
-- that inserts them (storage/events.py `insert_facts`), counting only the rows it actually
-- inserted, so a redelivered batch adds nothing. Events are their custom facts (one each).
-- Reading today is then proportional to the minutes elapsed, not to the rows stored.
--
-- `writer` is the PostgreSQL backend that made the facts: concurrent transactions write
-- rows of their own, so the counts add no lock that one tenant's writers would wait on
-- (nor a lock order between them), and readers sum over writers.
CREATE TABLE fact_counts (
    project_id   text NOT NULL,
    environment  text NOT NULL,
    minute       timestamptz NOT NULL,
    fact_type    text NOT NULL,
    writer       integer NOT NULL,
    count        bigint NOT NULL,
    PRIMARY KEY (project_id, environment, minute, fact_type, writer)
);

-- What the overview shows (today, by UTC day) of the facts stored before this table.
INSERT INTO fact_counts (project_id, environment, minute, fact_type, writer, count)
SELECT project_id, environment, date_trunc('minute', created_at), fact_type, 0, count(*)
FROM facts
WHERE created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '1 day'
GROUP BY 1, 2, 3, 4;
