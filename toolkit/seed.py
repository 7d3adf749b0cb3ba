"""Demo data for a fresh local database: a few hundred sellers' ads, ids from 1.

Uses the same documented generator as model training, so demo ads look like
what the model was fitted on. Seeds only an empty database.
"""

from __future__ import annotations

import psycopg2
import psycopg2.extras

from training.dataset import generate_ads

DEMO_ADS = 300
DEMO_SEED = 20261123


def seed_demo_data(database_url: str, n_ads: int = DEMO_ADS, seed: int = DEMO_SEED) -> int:
    """Insert demo users and ads unless any ad exists; return ads inserted."""
    ads = generate_ads(n_ads, seed)
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT EXISTS (SELECT 1 FROM advertisements)")
        if cur.fetchone()[0]:
            return 0
        sellers = {a.seller_id: a.is_verified_seller for a in ads}
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO users (id, name, is_verified) VALUES %s",
            [(sid, f"seller {sid}", verified) for sid, verified in sorted(sellers.items())],
        )
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO advertisements (id, seller_id, name, description, category, images_qty) VALUES %s",
            [(a.item_id, a.seller_id, a.name, a.description, a.category, a.images_qty) for a in ads],
        )
        # Explicit ids were inserted: move the sequences past them.
        cur.execute("SELECT setval('users_id_seq', (SELECT max(id) FROM users))")
        cur.execute("SELECT setval('advertisements_id_seq', (SELECT max(id) FROM advertisements))")
    conn.close()
    return len(ads)
