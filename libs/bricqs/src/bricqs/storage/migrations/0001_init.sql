-- Tenancy, keys, events, facts, idempotency, participants and the event catalog.
-- Every tenant-owned row carries (project_id, environment) at the head of its key, so
-- no index or query can cross tenants by accident.

CREATE TABLE projects (
    project_id  text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id          text PRIMARY KEY,
    project_id      text NOT NULL REFERENCES projects (project_id),
    environment     text NOT NULL CHECK (environment IN ('live', 'test')),
    key_hash        bytea NOT NULL UNIQUE,  -- SHA-256 of the key; the plaintext is never stored
    display_prefix  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);
CREATE INDEX api_keys_project ON api_keys (project_id, environment);

CREATE TABLE events (
    project_id       text NOT NULL,
    environment      text NOT NULL,
    event_id         text NOT NULL,
    event_name       text NOT NULL,
    participant_id   text NOT NULL,
    properties       jsonb NOT NULL,
    occurred_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    stored_at        timestamptz NOT NULL DEFAULT now(),
    idempotency_key  text,
    PRIMARY KEY (project_id, environment, event_id)
);
CREATE INDEX events_participant ON events (project_id, environment, participant_id, occurred_at);

CREATE TABLE facts (
    project_id      text NOT NULL,
    environment     text NOT NULL,
    fact_id         text NOT NULL,
    fact_type       text NOT NULL,
    participant_id  text NOT NULL,
    event_id        text NOT NULL,  -- the event this fact comes from, directly or by a chain
    properties      jsonb NOT NULL,
    occurred_at     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, environment, fact_id)
);
CREATE INDEX facts_participant ON facts (project_id, environment, participant_id, fact_type, occurred_at);
CREATE INDEX facts_event ON facts (project_id, environment, event_id);

-- The processor's long memory of idempotency keys (Redis remembers them for 24 h only).
CREATE TABLE idempotency_keys (
    project_id       text NOT NULL,
    environment      text NOT NULL,
    idempotency_key  text NOT NULL,
    event_id         text NOT NULL,
    payload_hash     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (project_id, environment, idempotency_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

CREATE TABLE participants (
    project_id      text NOT NULL,
    environment     text NOT NULL,
    participant_id  text NOT NULL,
    first_seen_at   timestamptz NOT NULL,  -- by event time (occurred_at)
    last_seen_at    timestamptz NOT NULL,
    event_count     bigint NOT NULL,
    attributes      jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (project_id, environment, participant_id)
);

CREATE TABLE event_catalog (
    project_id     text NOT NULL,
    environment    text NOT NULL,
    event_name     text NOT NULL,
    first_seen_at  timestamptz NOT NULL,  -- by receive time: when the system first saw it
    last_seen_at   timestamptz NOT NULL,
    event_count    bigint NOT NULL,
    PRIMARY KEY (project_id, environment, event_name)
);

-- One row per (event name, property key, JSON type) ever observed.
CREATE TABLE event_catalog_properties (
    project_id    text NOT NULL,
    environment   text NOT NULL,
    event_name    text NOT NULL,
    property_key  text NOT NULL,
    json_type     text NOT NULL,
    PRIMARY KEY (project_id, environment, event_name, property_key, json_type)
);
