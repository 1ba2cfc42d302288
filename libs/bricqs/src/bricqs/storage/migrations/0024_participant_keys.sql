-- Facts and ledger entries are written on the hot path (about three facts and one entry
-- per event with the bench's 20 rules) and read by participant: the participant's
-- listings (`list_facts`, `list_ledger`), backfill, export and erasure. Each table had a
-- primary key by id and a second index by (participant, id), so every row paid for two
-- index entries. The primary key now leads with the participant and serves those reads
-- itself; the second index is gone (20-rule drain: PostgreSQL CPU per event -10%,
-- events/s +8%, docs/scaling.md).
--
-- An id stays unique with its participant: a fact id or entry id is made for one
-- participant (a custom fact's from its event's id, an outcome's fresh, a scheduled
-- fact's from its participant and period), so no id is ever stored for two.
--
-- Readers by id alone must now name the participant: a webhook message carries its
-- fact's participant, and the scheduler asks for (participant, fact id) pairs. The
-- messages are filled here from their facts. A message whose fact is gone is deleted:
-- it could never be sent (the dispatcher's claim reads the fact), and it cannot exist
-- (erasure deleted a participant's messages before their facts, and retention keeps
-- the facts that messages name). Messages now name their participant, so erasure and
-- export find them with the participant's other tables (`storage.participant_data`).
ALTER TABLE webhook_messages ADD COLUMN participant_id text;
UPDATE webhook_messages m SET participant_id = f.participant_id
FROM facts f
WHERE f.project_id = m.project_id AND f.environment = m.environment AND f.fact_id = m.fact_id;
DELETE FROM webhook_messages WHERE participant_id IS NULL;
ALTER TABLE webhook_messages ALTER COLUMN participant_id SET NOT NULL;

ALTER TABLE facts DROP CONSTRAINT facts_pkey;
DROP INDEX facts_participant;
ALTER TABLE facts ADD PRIMARY KEY (project_id, environment, participant_id, fact_id, retention_at);

ALTER TABLE points_ledger DROP CONSTRAINT points_ledger_pkey;
DROP INDEX points_ledger_participant;
ALTER TABLE points_ledger ADD PRIMARY KEY (project_id, environment, participant_id, entry_id);
