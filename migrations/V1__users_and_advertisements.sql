-- Sellers and their ads: the data the marketplace backend owns and we score.
CREATE TABLE users (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT        NOT NULL DEFAULT '',
    is_verified BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE advertisements (
    id          BIGSERIAL PRIMARY KEY,
    seller_id   BIGINT      NOT NULL REFERENCES users (id),
    name        TEXT        NOT NULL,
    description TEXT        NOT NULL DEFAULT '',
    category    INTEGER     NOT NULL,
    images_qty  INTEGER     NOT NULL DEFAULT 0 CHECK (images_qty >= 0),
    -- Ads are soft-deleted by the marketplace; a task for a deleted ad fails
    -- permanently instead of scoring text the seller has withdrawn.
    is_deleted  BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX advertisements_seller_id_idx ON advertisements (seller_id);
