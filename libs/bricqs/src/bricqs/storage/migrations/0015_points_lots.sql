-- Points expiry (issue 18): points that expire are kept as lots, one per ledger credit of
-- a rule with `expires_after_days` (storage/lots.py). Points that never expire are not
-- lots: they are the balance less what the lots still hold, so the balances stored before
-- this migration (and anything an older processor credits during a rolling deploy) are
-- simply points that never expire, with nothing to copy.
CREATE TABLE points_lots (
    project_id     text NOT NULL,
    environment    text NOT NULL,
    participant_id text NOT NULL,
    lot_id         text NOT NULL,         -- the ledger entry that credited it
    amount         bigint NOT NULL CHECK (amount > 0),
    remaining      bigint NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    earned_at      timestamptz NOT NULL,  -- the earning fact's occurred_at
    expires_at     timestamptz NOT NULL,
    PRIMARY KEY (project_id, environment, participant_id, lot_id)
);

-- Spending order (soonest expiry first) of one participant's lots that still hold points;
-- spent and expired lots leave the index.
CREATE INDEX points_lots_spending
    ON points_lots (project_id, environment, participant_id, expires_at, earned_at, lot_id)
    INCLUDE (remaining) WHERE remaining > 0;

-- The expiry chore's work: lots due, across tenants, so a round reads only what is due.
CREATE INDEX points_lots_due ON points_lots (expires_at) WHERE remaining > 0;

-- What expiry took from the balance (lifetime earned is left as it was).
ALTER TABLE points_balances ADD COLUMN total_expired bigint NOT NULL DEFAULT 0;
