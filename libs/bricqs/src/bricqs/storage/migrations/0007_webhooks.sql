-- Webhooks (SPEC §11): the customer's endpoints, and the transactional outbox of the
-- messages owed to them.

CREATE TABLE webhook_endpoints (
    endpoint_id        text PRIMARY KEY,
    project_id         text NOT NULL REFERENCES projects (project_id),
    environment        text NOT NULL CHECK (environment IN ('live', 'test')),
    url                text NOT NULL,
    event_types        text[] NOT NULL,            -- fact types, or '*' for every outcome
    description        text NOT NULL DEFAULT '',
    enabled            boolean NOT NULL DEFAULT true,
    disabled_reason    text,                        -- why the dispatcher disabled it (410)
    secret             text NOT NULL,               -- whsec_…, returned once, at creation
    previous_secret    text,                        -- still signed with until it expires
    previous_secret_expires_at timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
-- The outbox write joins a tenant's enabled endpoints on every batch with outcomes.
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (project_id, environment);

-- One row per (endpoint, outcome): written in the transaction that commits the outcome.
-- The outcome's fact id is the message's webhook-id, the same on every attempt.
--
-- No foreign key to webhook_endpoints: its check would lock the endpoint's row (FOR KEY
-- SHARE) from every batch transaction that writes a message, all of them contending on
-- that one row; `delete_endpoint` deletes the endpoint's messages itself.
CREATE TABLE webhook_messages (
    endpoint_id      text NOT NULL,
    fact_id          text NOT NULL,
    project_id       text NOT NULL,
    environment      text NOT NULL,
    fact_type        text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),  -- while claimed: the lease's end
    lease_token      text,                                 -- the claim of the attempt in flight
    last_status      integer,                              -- HTTP status of the last attempt
    last_latency_ms  integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,                          -- delivered or failed at
    PRIMARY KEY (endpoint_id, fact_id)
);
-- The dispatcher's claim: an endpoint's due messages, oldest first.
CREATE INDEX webhook_messages_due ON webhook_messages (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
-- The retention purge: finished messages by age.
CREATE INDEX webhook_messages_finished ON webhook_messages (finished_at)
    WHERE status <> 'pending';
