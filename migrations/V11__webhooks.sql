-- depends: V10__reviews
-- Push, not poll (issue 22; docs/webhooks.md): signed completion webhooks per client,
-- delivered at least once through their own queue. Idempotent: every statement can run twice.

-- A client's endpoints. The secret is stored as the cipher made it (chalicelib/webhooks/secrets.py):
-- KMS ciphertext on AWS, `plain:` + the secret under `make run`. `previous_secret` signs too
-- until `previous_until` (a rotation's overlap window), so a receiver can switch without downtime.
-- `failing_since`: the first failed delivery after the last success; an endpoint failing for
-- WEBHOOK_DISABLE_AFTER_SECONDS (5 days) is disabled (`disabled_reason` says why).
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id              TEXT        PRIMARY KEY CHECK (id ~ '^ep_[A-Za-z0-9]{1,64}$'),
    client_id       TEXT        NOT NULL,
    url             TEXT        NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048),
    events          TEXT[]      NOT NULL CHECK (cardinality(events) >= 1),
    secret          TEXT        NOT NULL,
    previous_secret TEXT,
    previous_until  TIMESTAMPTZ,
    enabled         BOOLEAN     NOT NULL DEFAULT true,
    disabled_reason TEXT,
    failing_since   TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The outbox write joins on (client, enabled): a batch whose clients subscribe nothing reads this index only.
CREATE INDEX IF NOT EXISTS webhook_endpoints_client_idx ON webhook_endpoints (client_id) WHERE enabled;

-- The outbox: one row per event and endpoint, written in the same transaction as the state change
-- it reports (chalicelib/storage/webhooks.py, record_events). `body` is the exact bytes signed and
-- sent on every attempt, and `event_id` the `webhook-id` of every retry: a receiver dedupes on it.
-- `next_attempt_at`: when the next attempt is due; `enqueued_at`: when its message was sent to the
-- webhooks queue (NULL: not sent, so the reconciler sends it once it is due).
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              BIGSERIAL   PRIMARY KEY,
    event_id        TEXT        NOT NULL,
    endpoint_id     TEXT        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    client_id       TEXT        NOT NULL,
    event_type      TEXT        NOT NULL,
    task_id         BIGINT,
    body            TEXT        NOT NULL,
    status          TEXT        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'exhausted', 'dropped')),
    attempts        INT         NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    enqueued_at     TIMESTAMPTZ,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- event_id is random (128 bits): no unique index on it, one index fewer on the scorer's path
    delivered_at    TIMESTAMPTZ
);
-- The reconciler's sweep: pending deliveries whose message is due and not sent.
CREATE INDEX IF NOT EXISTS webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- Replay and the attempts route: an endpoint's deliveries by time.
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, created_at);

-- Every attempt: what GET /webhooks/endpoints/{id}/attempts shows.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    id           BIGSERIAL   PRIMARY KEY,
    delivery_id  BIGINT      NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    endpoint_id  TEXT        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    attempt      INT         NOT NULL,
    at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    status_code  INT,
    latency_ms   INT,
    error        TEXT,
    outcome      TEXT        NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_attempts_endpoint_idx ON webhook_attempts (endpoint_id, id);
