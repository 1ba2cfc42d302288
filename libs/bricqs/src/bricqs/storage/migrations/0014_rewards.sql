-- The rewards catalogue (issue 18): rewards bought with points, their inventory, and the
-- claims that bought them. A reward is not a rule (no fact ever matches it), so it lives
-- outside `definitions`: its writes do not make every worker recompile the rules, and its
-- stock is a column a claim can take with one conditional UPDATE.

CREATE TABLE rewards (
    project_id   text NOT NULL,
    environment  text NOT NULL,
    code         text NOT NULL,
    status       text NOT NULL,
    body         jsonb NOT NULL,          -- the definition as the admin gave it
    -- Inventory: a count (`stock`, of which `claimed` are taken by claims not cancelled),
    -- a pool of codes (`code_pool`, rows of reward_codes), or neither (unlimited).
    stock        bigint CHECK (stock >= 0),
    claimed      bigint NOT NULL DEFAULT 0 CHECK (claimed >= 0),
    code_pool    boolean NOT NULL DEFAULT false,
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, environment, code),
    CHECK (NOT (code_pool AND stock IS NOT NULL)),
    -- Never oversold, whatever a writer does: claims add 1 only while `claimed < stock`,
    -- and this refuses any other way past it (a stock lowered below what is claimed).
    CONSTRAINT rewards_stock_not_oversold CHECK (claimed <= stock)
);

-- The unique codes of a pool reward. Nothing names who holds a code (no participant, no
-- claim id): that is on the claim (`reward_claims.code`), erased with the participant,
-- while the pool keeps counting the code as claimed.
CREATE TABLE reward_codes (
    project_id   text NOT NULL,
    environment  text NOT NULL,
    reward_code  text NOT NULL,
    code         text NOT NULL,
    status       text NOT NULL DEFAULT 'available'
                 CHECK (status IN ('available', 'claimed', 'void')),
    added_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, environment, reward_code, code)
);
-- Claims take the oldest available code, skipping codes other claims hold locked.
CREATE INDEX reward_codes_available
    ON reward_codes (project_id, environment, reward_code, added_at, code)
    WHERE status = 'available';

CREATE TABLE reward_claims (
    project_id       text NOT NULL,
    environment      text NOT NULL,
    claim_id         text NOT NULL,
    participant_id   text NOT NULL,
    reward_code      text NOT NULL,
    cost             bigint NOT NULL,
    code             text,                 -- the pool code handed out, if any
    stock_taken      boolean NOT NULL,     -- counted in rewards.claimed (given back on cancel)
    status           text NOT NULL CHECK (status IN ('claimed', 'cancelled')),
    idempotency_key  text,
    debit_entry_id   text,                 -- the ledger entry that paid (none when free)
    refund_entry_id  text,                 -- the ledger entry that refunded a cancel
    claimed_at       timestamptz NOT NULL,
    cancelled_at     timestamptz,
    code_action      text CHECK (code_action IN ('returned', 'voided')),
    cancel_reason    text,
    PRIMARY KEY (project_id, environment, claim_id)
);
CREATE UNIQUE INDEX reward_claims_key
    ON reward_claims (project_id, environment, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- A participant's claims, newest first, and their count per reward (claim limits).
CREATE INDEX reward_claims_participant
    ON reward_claims (project_id, environment, participant_id, claim_id);
