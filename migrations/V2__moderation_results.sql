-- depends: V1__users_and_advertisements
-- One row per moderation task; id is the task_id clients poll.
-- No foreign key to advertisements: a result outlives a hard-deleted ad.
CREATE TABLE moderation_results (
    id            BIGSERIAL PRIMARY KEY,
    item_id       BIGINT           NOT NULL,
    status        TEXT             NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    is_violation  BOOLEAN,
    probability   DOUBLE PRECISION CHECK (probability >= 0 AND probability <= 1),
    model_version TEXT,
    error_message TEXT,
    -- 'permanent' | 'transient' | 'stuck': why a failed task failed.
    error_kind    TEXT,
    -- Highest SQS ApproximateReceiveCount seen for this task.
    attempts      INTEGER          NOT NULL DEFAULT 0,
    last_error    TEXT,
    created_at    TIMESTAMPTZ      NOT NULL DEFAULT now(),
    -- NULL until the API's send to SQS succeeded; the reconciler re-sends
    -- tasks that stay NULL past a grace period (the send was lost).
    enqueued_at   TIMESTAMPTZ,
    processed_at  TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ      NOT NULL DEFAULT now(),
    CONSTRAINT completed_has_verdict CHECK (
        status <> 'completed'
        OR (is_violation IS NOT NULL AND probability IS NOT NULL AND model_version IS NOT NULL)
    ),
    CONSTRAINT failed_has_reason CHECK (status <> 'failed' OR error_message IS NOT NULL)
);

CREATE INDEX moderation_results_item_id_idx ON moderation_results (item_id);
-- The reconciler only ever looks at unfinished tasks.
CREATE INDEX moderation_results_unfinished_idx
    ON moderation_results (created_at) WHERE status IN ('pending', 'processing');
