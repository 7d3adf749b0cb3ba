-- Helpers of the adoption conversions (chalicelib/migrate.py runs this file, then a
-- stand-in, in the transaction that records the migration). In pg_temp: they are
-- gone with the session and leave nothing in the database.

-- Drop a table's foreign keys.
CREATE OR REPLACE FUNCTION pg_temp.drop_foreign_keys(tbl regclass) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT conname FROM pg_constraint WHERE conrelid = tbl AND contype = 'f' LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', tbl, r.conname);
    END LOOP;
END $$;

-- Drop a table's indexes that back no constraint: the older service's own, which
-- served its queries; the migration's indexes are created instead.
CREATE OR REPLACE FUNCTION pg_temp.drop_plain_indexes(tbl regclass) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT i.indexrelid::regclass AS idx FROM pg_index i
             WHERE i.indrelid = tbl AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) LOOP
        EXECUTE format('DROP INDEX %s', r.idx);
    END LOOP;
END $$;

-- Give a table the names a fresh ad-moderation table has (<table>_pkey,
-- <table>_<column>_fkey, <table>_<column>_not_null (PostgreSQL 18 names NOT NULL
-- constraints), <table>_id_seq; seed 002 renamed its tables, not their constraints
-- and sequences) so later migrations can name them, make its id sequence 64-bit
-- (a SERIAL's stops at 2^31 - 1), and move the sequence past the highest id kept,
-- so new ids continue after the old ones even if rows were inserted with explicit ids.
CREATE OR REPLACE FUNCTION pg_temp.adopt_keys(tbl regclass) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t text := (SELECT relname FROM pg_class WHERE oid = tbl);
    seq regclass := pg_get_serial_sequence(tbl::text, 'id')::regclass;
    top bigint;
    wanted text;
    r record;
BEGIN
    FOR r IN SELECT c.conname, c.contype, a.attname FROM pg_constraint c
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
             WHERE c.conrelid = tbl AND c.contype IN ('p', 'f', 'n') LOOP
        wanted := CASE r.contype WHEN 'p' THEN t || '_pkey' WHEN 'f' THEN t || '_' || r.attname || '_fkey'
                                 ELSE t || '_' || r.attname || '_not_null' END;
        IF r.conname <> wanted THEN
            EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', tbl, r.conname, wanted);
        END IF;
    END LOOP;
    EXECUTE format('ALTER SEQUENCE %s AS bigint', seq);
    IF (SELECT relname FROM pg_class WHERE oid = seq) <> t || '_id_seq' THEN
        EXECUTE format('ALTER SEQUENCE %s RENAME TO %I', seq, t || '_id_seq');
    END IF;
    EXECUTE format('SELECT max(id) FROM %s', tbl) INTO top;
    IF top > coalesce(pg_sequence_last_value(seq), 0) THEN
        PERFORM setval(seq, top);
    END IF;
END $$;
