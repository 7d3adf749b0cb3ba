-- depends: V3__task_events
-- Idempotency-Key of POST /moderation/async_predict (and /async_predict): a
-- repeated key returns the first request's task instead of creating another.
-- The key row is inserted in the same statement as the task it names
-- (ModerationStore.create_task_once), so the two commit together; the primary
-- key makes concurrent requests with one key create exactly one task.
-- Rows are kept at least 24 h; the reconciler purges older ones
-- (ModerationStore.purge_idempotency_keys).
-- No foreign key to moderation_results: see V3 (an FK check locks the task row).
CREATE TABLE idempotency_keys (
    key        TEXT        PRIMARY KEY CHECK (char_length(key) BETWEEN 1 AND 255),
    -- The request the key was first used with: the same key for another item is a 409.
    item_id    BIGINT      NOT NULL,
    task_id    BIGINT      NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
