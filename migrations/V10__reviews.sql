-- depends: V9__client_contracts
-- The human review loop (issue 21; docs/reviews.md): the review queue, leased claims, human
-- verdicts and appeals. Idempotent (IF NOT EXISTS, DROP ... IF EXISTS), so adopted databases and
-- a second run get the same schema.
--
-- The scorer's batch write is not touched: a task the model put in the review band enters the
-- queue by the partial index below over what the scorer already wrote (decision = 'review'), and
-- leaves it when a human verdict rewrites its decision. Only the review routes write what follows.

-- The final decision and who made it, on the task row, so every read of a task (and a page of
-- them) shows it with no join. NULL for tasks only the model decided (decided_by reads `model`).
--   decided_by      'human' once a moderator decided it (a review verdict or an appeal's)
--   model_decision  the model's own decision, kept when a person overrides `decision`
--   reviewed_by     the client id of the moderator's key that made the latest human decision
--   review_reason   that decision's reason code (chalicelib/domain/reviews.py REASONS)
--   reviewed_at     when
--   appeal          'pending' | 'upheld' | 'overturned': the task's one appeal
ALTER TABLE moderation_results
    ADD COLUMN IF NOT EXISTS decided_by     TEXT,
    ADD COLUMN IF NOT EXISTS model_decision TEXT,
    ADD COLUMN IF NOT EXISTS reviewed_by    TEXT,
    ADD COLUMN IF NOT EXISTS review_reason  TEXT,
    ADD COLUMN IF NOT EXISTS reviewed_at    TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS appeal         TEXT;
ALTER TABLE moderation_results DROP CONSTRAINT IF EXISTS decided_by_known;
ALTER TABLE moderation_results ADD CONSTRAINT decided_by_known
    CHECK (decided_by IN ('model', 'human')) NOT VALID;
ALTER TABLE moderation_results DROP CONSTRAINT IF EXISTS appeal_known;
ALTER TABLE moderation_results ADD CONSTRAINT appeal_known
    CHECK (appeal IN ('pending', 'upheld', 'overturned')) NOT VALID;

-- The queue of the review band: oldest first by task id. Partial, so it holds only the tasks
-- waiting for a person and costs the submit path nothing (a new task has no decision).
CREATE INDEX IF NOT EXISTS moderation_results_review_queue_idx
    ON moderation_results (id) WHERE decision = 'review' AND status = 'completed';
-- Appeals waiting for a person.
CREATE INDEX IF NOT EXISTS moderation_results_appeal_queue_idx
    ON moderation_results (id) WHERE appeal = 'pending';

-- One row per (task, kind) a person took up: the lease, then the verdict. kind 'review' is the
-- model's review band, 'appeal' a client's appeal of a block. Written only by the review routes
-- (chalicelib/storage/reviews.py), under the task row's lock. No foreign key (see V3).
CREATE TABLE IF NOT EXISTS human_reviews (
    task_id          BIGINT      NOT NULL,
    kind             TEXT        NOT NULL CHECK (kind IN ('review', 'appeal')),
    queued_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- an appeal: the client's statement, and the moderator who decided what is appealed
    appeal_reason    TEXT,
    prior_reviewer   TEXT,
    -- the lease: who holds it until when (NULL: nobody); claims counts the leases given
    lease_holder     TEXT,
    lease_expires_at TIMESTAMPTZ,
    claims           INTEGER     NOT NULL DEFAULT 0,
    -- the verdict
    decision         TEXT        CHECK (decision IN ('allow', 'block')),
    reason           TEXT,
    note             TEXT,
    decided_by       TEXT,
    decided_at       TIMESTAMPTZ,
    PRIMARY KEY (task_id, kind)
);
-- make statements and the training labels read verdicts by time.
CREATE INDEX IF NOT EXISTS human_reviews_decided_at_idx ON human_reviews (decided_at) WHERE decided_at IS NOT NULL;

-- The trail gains the loop's events, and who acted (a moderator's or a client's id).
ALTER TABLE task_events ADD COLUMN IF NOT EXISTS actor TEXT;
ALTER TABLE task_events DROP CONSTRAINT IF EXISTS task_events_kind_check;
ALTER TABLE task_events ADD CONSTRAINT task_events_kind_check CHECK (kind IN (
    'accepted', 'enqueued', 'send_failed', 'attempt', 'redriven', 'dlq_parked', 'resent', 'failed_stuck',
    'claimed', 'lease_expired', 'reviewed', 'appealed', 'appeal_decided')) NOT VALID;
