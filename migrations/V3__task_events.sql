-- depends: V2__moderation_results
-- A task's trail, for clients and ops (GET /moderation/moderation_result/{id}/events):
-- every row is written in the same transaction as the state change it records.
-- No foreign key: an FK check takes a KEY SHARE lock on the task row, which
-- would make the API's writes queue behind the scorer's row lock for nothing.
CREATE TABLE task_events (
    id         BIGSERIAL   PRIMARY KEY,
    task_id    BIGINT      NOT NULL,
    at         TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- accepted     the API stored the task
    -- enqueued     the API's (or reconciler's) SendMessage succeeded
    -- send_failed  the API's SendMessage failed; the reconciler re-sends
    -- attempt      the scorer received it (attempt = ApproximateReceiveCount; outcome, error)
    -- redriven     the scorer picked up a task that had failed transiently (ops redrove it)
    -- dlq_parked   an envelope or the message itself went to moderation_dlq
    -- resent       the reconciler sent it again (lost send, or never received)
    -- failed_stuck the reconciler gave up on it
    kind       TEXT        NOT NULL CHECK (kind IN ('accepted', 'enqueued', 'send_failed', 'attempt', 'redriven',
                                                     'dlq_parked', 'resent', 'failed_stuck')),
    attempt    INTEGER,
    outcome    TEXT,
    error      TEXT,
    message_id TEXT,
    request_id TEXT
);

CREATE INDEX task_events_task_id_idx ON task_events (task_id, id);

-- started_at: the first pick-up by the scorer. request_id: the API request
-- that created the task, carried to the scorer's logs (SQS message attribute).
ALTER TABLE moderation_results
    ADD COLUMN started_at TIMESTAMPTZ,
    ADD COLUMN request_id TEXT;
