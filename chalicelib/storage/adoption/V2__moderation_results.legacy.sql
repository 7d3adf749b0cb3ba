-- Stands in for V2__moderation_results on the older services' databases (seeds 000 and
-- 001, FastAPI + Kafka; seed 002, the course project), whose moderation_results has
-- id SERIAL, item_id, status, is_violation, probability, error_message, created_at,
-- processed_at, and whose rows chalicelib/migrate.py has checked. Leaves the table
-- exactly as V2 creates it, every row kept; runs in the transaction that records V2.

-- Their timestamps have no time zone: they are read as UTC (docs/moving-over.md).
-- SET LOCAL: this transaction only. (A column already
-- WITH TIME ZONE keeps its instants: ::timestamp gives its UTC wall time.)
SET LOCAL TimeZone = 'UTC';

-- No foreign key to advertisements (V2: a result outlives its ad); V2's indexes
-- instead of theirs.
SELECT pg_temp.drop_foreign_keys('moderation_results');
SELECT pg_temp.drop_plain_indexes('moderation_results');

ALTER TABLE moderation_results
    ALTER COLUMN status DROP DEFAULT,
    ALTER COLUMN created_at DROP DEFAULT;
-- One rewrite of the table for every type change.
ALTER TABLE moderation_results
    ALTER COLUMN id TYPE BIGINT,
    ALTER COLUMN item_id TYPE BIGINT,
    ALTER COLUMN status TYPE TEXT,
    ALTER COLUMN probability TYPE DOUBLE PRECISION,
    ALTER COLUMN error_message TYPE TEXT,
    ALTER COLUMN created_at TYPE TIMESTAMPTZ USING created_at::timestamp AT TIME ZONE 'UTC',
    ALTER COLUMN processed_at TYPE TIMESTAMPTZ USING processed_at::timestamp AT TIME ZONE 'UTC';
ALTER TABLE moderation_results
    ALTER COLUMN item_id SET NOT NULL,
    ALTER COLUMN status SET NOT NULL,
    ALTER COLUMN status SET DEFAULT 'pending',
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN created_at SET DEFAULT now(),
    ADD COLUMN model_version TEXT,
    ADD COLUMN error_kind TEXT,
    ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN last_error TEXT,
    ADD COLUMN enqueued_at TIMESTAMPTZ,
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- Tasks the older service accepted and never finished: their message is in its own
-- queue (Kafka), which nothing reads any more. Those younger than the stuck-task
-- horizon (STUCK_AFTER_SECONDS, set for this transaction by chalicelib/storage/migrations.py
-- as ad_moderation.stuck_after_seconds) are handed to this pipeline: pending, never
-- sent (enqueued_at NULL), so the reconciler re-sends them like a task whose send was
-- lost, and they are scored and answered. Older ones end failed now, as stuck, with a
-- reason a client can act on (docs/moving-over.md).
CREATE TEMP TABLE adopted_horizon ON COMMIT DROP AS
SELECT now() - make_interval(secs => coalesce(
    nullif(current_setting('ad_moderation.stuck_after_seconds', true), '')::int, 1800)) AS since;
UPDATE moderation_results
SET status = 'failed', error_kind = 'stuck', is_violation = NULL, probability = NULL, processed_at = now(),
    error_message = 'accepted by the older moderation service but not finished before the move to ad-moderation: '
                    || 'submit the ad again'
WHERE status IN ('pending', 'processing') AND created_at <= (SELECT since FROM adopted_horizon);
UPDATE moderation_results
SET status = 'pending', is_violation = NULL, probability = NULL, processed_at = NULL, error_message = NULL
WHERE status IN ('pending', 'processing');
-- Verdicts of the older service's model; failures it recorded no reason for.
UPDATE moderation_results SET model_version = 'legacy' WHERE status = 'completed';
UPDATE moderation_results SET error_message = 'failed in the older moderation service, which recorded no reason'
WHERE status = 'failed' AND error_message IS NULL;

ALTER TABLE moderation_results
    ADD CONSTRAINT moderation_results_status_check CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    ADD CONSTRAINT moderation_results_probability_check CHECK (probability >= 0 AND probability <= 1),
    ADD CONSTRAINT completed_has_verdict CHECK (
        status <> 'completed'
        OR (is_violation IS NOT NULL AND probability IS NOT NULL AND model_version IS NOT NULL)
    ),
    ADD CONSTRAINT failed_has_reason CHECK (status <> 'failed' OR error_message IS NOT NULL);

SELECT pg_temp.adopt_keys('moderation_results');
CREATE INDEX moderation_results_item_id_idx ON moderation_results (item_id);
CREATE INDEX moderation_results_unfinished_idx
    ON moderation_results (created_at) WHERE status IN ('pending', 'processing');
