-- Stands in for V1__users_and_advertisements on the course project's database (seed 002
-- at its last release: pgmigrate V1, V2, V4, V5), whose users and advertisements
-- chalicelib/migrate.py has checked column by column. Leaves them exactly as V1 creates
-- them, every row kept; runs in the transaction that records V1.

-- users(id SERIAL, is_verified_seller): the flag takes the contract's name; its sellers
-- have no name (V4 dropped it) and no creation time.
ALTER TABLE users RENAME COLUMN is_verified_seller TO is_verified;
ALTER TABLE users
    ALTER COLUMN id TYPE BIGINT,
    ALTER COLUMN is_verified SET DEFAULT FALSE,
    ADD COLUMN name TEXT NOT NULL DEFAULT '',
    ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- advertisements(id SERIAL, seller_id INTEGER, ..., is_closed): V1 calls the flag
-- is_deleted, and V5, which runs next as on every database, renames it is_closed.
ALTER TABLE advertisements RENAME COLUMN is_closed TO is_deleted;
ALTER TABLE advertisements
    ALTER COLUMN id TYPE BIGINT,
    ALTER COLUMN seller_id TYPE BIGINT,
    ALTER COLUMN name TYPE TEXT,
    ALTER COLUMN description TYPE TEXT,
    ALTER COLUMN description SET DEFAULT '',
    ALTER COLUMN images_qty SET DEFAULT 0,
    ALTER COLUMN is_deleted SET DEFAULT FALSE,
    ADD CONSTRAINT advertisements_images_qty_check CHECK (images_qty >= 0),
    ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now();

SELECT pg_temp.drop_plain_indexes('users');
SELECT pg_temp.drop_plain_indexes('advertisements');
SELECT pg_temp.adopt_keys('users');
SELECT pg_temp.adopt_keys('advertisements');
CREATE INDEX advertisements_seller_id_idx ON advertisements (seller_id);
