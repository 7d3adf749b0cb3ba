-- depends: V7__model_decisions
-- Clients kept apart (issue 20; docs/clients.md). Every task and Idempotency-Key
-- belongs to the client whose API key submitted it; a client reading another's task
-- gets the 404 of a task that does not exist.

-- Which client an API key is, and what it may do: API Gateway verifies the key and
-- puts its id in the request context (identity.apiKeyId); the API function reads
-- this row (cached per warm container, chalicelib/api/auth.py). Written by
-- `make api-key` (through the `migrate` function on a deployed stack: the database
-- is private). make run reads its own key store instead (toolkit/local_keys.py).
CREATE TABLE IF NOT EXISTS api_clients (
    key_id     TEXT        PRIMARY KEY CHECK (char_length(key_id) BETWEEN 1 AND 128),
    client     TEXT        NOT NULL CHECK (client ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    scopes     TEXT[]      NOT NULL DEFAULT '{submit}'
               CHECK (scopes <@ ARRAY['submit', 'close', 'moderate', 'admin']::text[]),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The owner of each task. Rows already there (this service's older tasks, and those
-- adopted from the older services) go to the client named at migrate time:
-- `make migrate ARGS="--client NAME"` sets moderation.default_client for the
-- session; without it, `legacy` (docs/clients.md#tasks-from-before-clients). A
-- non-volatile default: PostgreSQL 11+ records it once instead of rewriting the
-- table. Dropped right after: every new task names its client.
ALTER TABLE moderation_results ADD COLUMN IF NOT EXISTS client_id TEXT NOT NULL
    DEFAULT COALESCE(NULLIF(current_setting('moderation.default_client', true), ''), 'legacy');
ALTER TABLE moderation_results ALTER COLUMN client_id DROP DEFAULT;

-- Idempotency-Keys are per client: the same key from two clients is two requests.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS client_id TEXT NOT NULL
    DEFAULT COALESCE(NULLIF(current_setting('moderation.default_client', true), ''), 'legacy');
ALTER TABLE idempotency_keys ALTER COLUMN client_id DROP DEFAULT;
ALTER TABLE idempotency_keys DROP CONSTRAINT IF EXISTS idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (client_id, key);

-- GET /moderation/tasks for one client: its newest tasks, and those in a status, with the
-- client in front, so a client's page reads about `limit` entries however many tasks other
-- clients have (chalicelib/storage/tasks.py, task_page_query). By ad, V6's (item_id, id)
-- serves, the client filtered: an ad has a handful of tasks, and a third index here
-- would be one more entry written on every insert and status change (each is a non-HOT
-- update: status is indexed); measured with `make load`, the two indexes cost about 2 % of
-- submit p50. `admin` reads use V6's. As in V6, on a big table ops build these beforehand
-- with CREATE INDEX CONCURRENTLY.
CREATE INDEX IF NOT EXISTS moderation_results_client_id_idx ON moderation_results (client_id, id);
CREATE INDEX IF NOT EXISTS moderation_results_client_status_id_idx ON moderation_results (client_id, status, id);
