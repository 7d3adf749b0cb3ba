-- depends: V4__idempotency_keys
-- One flag for "this ad is no longer moderated": is_closed, the name the course
-- project's database (seed 002) uses and POST /moderation/close sets. The
-- marketplace closes (formerly "soft-deletes") an ad with it as well; a task
-- for a closed ad fails permanently, a new one is refused with 404.
-- A rename is a catalog change: no rewrite, a brief ACCESS EXCLUSIVE lock.
ALTER TABLE advertisements RENAME COLUMN is_deleted TO is_closed;
