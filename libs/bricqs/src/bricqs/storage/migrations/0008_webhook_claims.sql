-- The dispatcher's per-endpoint bound holds across replicas: each claim counts the
-- endpoint's messages still leased (claimed, result not yet recorded), which this index
-- keeps to a handful of rows whatever the endpoint's backlog.
--
-- Not CONCURRENTLY: that form waits for every other transaction, a concurrent migrator
-- waiting on the migration lock included (a deadlock). Building it holds writes to
-- webhook_messages for one scan of the table; on a large outbox, run it in a quiet period.
CREATE INDEX webhook_messages_leased
    ON webhook_messages (endpoint_id, next_attempt_at) WHERE lease_token IS NOT NULL;
