-- depends: V5__closed_ads
-- GET /moderation/tasks lists tasks newest first (id DESC), by ad or by status,
-- one query per page that continues below the last id (chalicelib/storage.py,
-- task_page_query). With these two indexes a filtered page reads about `limit`
-- entries wherever the matching tasks are. Without them (EXPLAIN ANALYZE, 100,000
-- tasks) PostgreSQL walked the primary key backwards and filtered: 1,330 buffers for
-- `failed` when the failures were a week old, 1,450 for an ad whose tasks were all
-- old, and more the bigger the table. Unfiltered pages already use the primary key.
-- The builds block writes to the table (not reads): about 1 s per million tasks.
-- IF NOT EXISTS: on a big table ops build them beforehand with CREATE INDEX
-- CONCURRENTLY (docs/operations/migrations.md), and this only records them.
CREATE INDEX IF NOT EXISTS moderation_results_item_id_id_idx ON moderation_results (item_id, id);
CREATE INDEX IF NOT EXISTS moderation_results_status_id_idx ON moderation_results (status, id);
-- (item_id, id) answers every query V2's (item_id) did. Dropped last: DROP INDEX
-- blocks reads too, for the moment to commit.
DROP INDEX IF EXISTS moderation_results_item_id_idx;
