-- depends: V6__task_list_indexes
-- The model registry (issue 15): a verdict's decision, and the shadow's verdicts.

-- allow | review | block: `block` is is_violation; `review` is the band below the
-- threshold (chalicelib/domain.py decide). NULL for tasks scored before this
-- migration and for unfinished or failed ones. NOT VALID: every existing row is
-- NULL, so there is nothing to check, and a big table is not scanned under an
-- exclusive lock to find that out.
ALTER TABLE moderation_results ADD COLUMN decision TEXT;
ALTER TABLE moderation_results ADD CONSTRAINT decision_known
    CHECK (decision IN ('allow', 'review', 'block')) NOT VALID;

-- How the `shadow` alias's version judged each task the live version completed
-- (chalicelib/scoring.py); never shown to clients; read by `make model-compare`.
-- One row per task and shadow version: a redelivered task keeps its first.
-- No foreign key to moderation_results: see V3 (an FK check locks the task row).
CREATE TABLE shadow_verdicts (
    task_id            BIGINT           NOT NULL,
    shadow_version     TEXT             NOT NULL,
    live_version       TEXT             NOT NULL,
    live_probability   DOUBLE PRECISION NOT NULL,
    shadow_probability DOUBLE PRECISION NOT NULL,
    live_decision      TEXT             NOT NULL,
    shadow_decision    TEXT             NOT NULL,
    scored_at          TIMESTAMPTZ      NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, shadow_version)
);

-- make model-compare: the latest N verdicts of one shadow version.
CREATE INDEX shadow_verdicts_latest_idx ON shadow_verdicts (shadow_version, scored_at DESC);
CREATE INDEX shadow_verdicts_scored_at_idx ON shadow_verdicts (scored_at DESC);
