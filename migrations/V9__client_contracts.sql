-- depends: V8__clients
-- The contract each client's requests speak (issue 25; docs/clients.md#contracts), pinned per
-- client as Stripe pins API versions: 'current' (400, 202, this service's error shape) or
-- 'legacy' (the older FastAPI services' answers: 422 in FastAPI's shape, 200 on submit).
-- Per client, not per key: a client that revokes its key and makes a new one keeps its pin.
-- No row: 'current'. Read with the key's row (chalicelib/storage/clients.py), cached like scopes.
CREATE TABLE IF NOT EXISTS client_contracts (
    client     TEXT        PRIMARY KEY CHECK (client ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    contract   TEXT        NOT NULL CHECK (contract IN ('current', 'legacy')),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Clients moved over from the older services are pinned to 'legacy': the owners (V8's
-- `make migrate ARGS="--client NAME"`, default `legacy`) of adopted tasks, which are the
-- tasks without a trail (every task this service accepts has its `accepted` event, V3). A
-- pin already there is kept, so running this twice, or after an operator changed it,
-- changes nothing.
INSERT INTO client_contracts (client, contract)
SELECT DISTINCT m.client_id, 'legacy'
FROM moderation_results m
WHERE NOT EXISTS (SELECT 1 FROM task_events e WHERE e.task_id = m.id)
  AND m.client_id ~ '^[a-z0-9][a-z0-9-]{0,62}$'
ON CONFLICT (client) DO NOTHING;
