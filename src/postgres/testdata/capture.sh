#!/usr/bin/env bash
# Regenerates pgoutput_v1.txt: real pgoutput messages (proto_version 1) captured from PostgreSQL.
#
#   src/sources/postgres/testdata/capture.sh > src/sources/postgres/testdata/pgoutput_v1.txt
#
# Starts a throwaway cluster (wal_level=logical, unix socket only) in a temp dir, runs statements that
# produce every message and tuple kind, and prints one line per message: `<scenario>.<index>.<kind> <hex>`
# where <kind> is the message's first byte. Each scenario is decoded in its own
# pg_logical_slot_get_binary_changes call, so Relation/Type messages are repeated per scenario.
# LSNs, xids, timestamps and relation OIDs differ on every run; the tests never hard-code them.
set -euo pipefail

if [ "$(id -u)" = 0 ]; then
  # initdb refuses to run as root.
  exec runuser -u postgres -- bash -s -- "$@" <"$0"
fi

BIN=$(pg_config --bindir)
DIR=$(mktemp -d)
trap '"$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
"$BIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
"$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w start \
  -o "-c wal_level=logical -c listen_addresses='' -c unix_socket_directories=$DIR -c port=5432 -c fsync=off" \
  >/dev/null

sql() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p 5432 -U postgres -d postgres "$@"; }

# capture NAME [peek|get] [SETTINGS-SQL]: print the pending messages under NAME.
capture() {
  local name=$1 fn=${2:-get} settings=${3:-SET TimeZone = 'UTC'; SET IntervalStyle = 'iso_8601';}
  sql -At -F ' ' -c "$settings" -c "
    SELECT '$name.' || (n - 1) || '.' || chr(get_byte(data, 0)), encode(data, 'hex')
    FROM pg_logical_slot_${fn}_binary_changes('cap', NULL, NULL, 'proto_version', '1',
      'publication_names', 'capub', 'messages', 'true') WITH ORDINALITY AS c(lsn, xid, data, n)"
}

sql >/dev/null <<'SQL'
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TABLE items (id int PRIMARY KEY, name text, qty int, note text);
CREATE TABLE items_full (id int PRIMARY KEY, name text, qty int);
ALTER TABLE items_full REPLICA IDENTITY FULL;
CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;  -- out of line, uncompressed
CREATE TABLE parent (id serial PRIMARY KEY);
CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent (id));
CREATE TABLE moods (id int PRIMARY KEY, m mood);
CREATE TABLE alltypes (
  id int PRIMARY KEY,
  c_bool bool, c_int2 int2, c_int4 int4, c_int8 int8, c_oid oid,
  c_float4 float4, c_float8 float8, c_numeric numeric, c_numeric_scaled numeric(10, 2),
  c_text text, c_varchar varchar(20), c_bpchar char(5), c_name name, c_char "char",
  c_uuid uuid, c_date date, c_time time, c_timetz timetz, c_timestamp timestamp(6),
  c_timestamptz timestamptz, c_interval interval, c_json json, c_jsonb jsonb, c_bytea bytea,
  a_bool bool[], a_int2 int2[], a_int4 int4[], a_int8 int8[], a_text text[], a_varchar varchar[],
  a_float4 float4[], a_float8 float8[], a_numeric numeric[], a_uuid uuid[], a_date date[],
  a_timestamp timestamp[], a_timestamptz timestamptz[], a_json json[], a_jsonb jsonb[], a_bytea bytea[],
  c_enum mood, c_domain posint
);
INSERT INTO items_full VALUES (1, 'pear', 1), (2, 'plum', 2);
INSERT INTO parent VALUES (DEFAULT), (DEFAULT);
INSERT INTO child (parent_id) VALUES (1), (2);
SELECT pg_replication_origin_create('remix_origin');
CREATE PUBLICATION capub FOR ALL TABLES;
SELECT pg_create_logical_replication_slot('cap', 'pgoutput');
SQL

sql -c "INSERT INTO items VALUES (1, 'apple', 3, 'n1')"
capture insert
sql -c "INSERT INTO items VALUES (10, NULL, NULL, NULL)"
capture insert_nulls
sql -c "UPDATE items SET qty = 4 WHERE id = 1"
capture update_default
sql -c "UPDATE items SET id = 2, qty = 5 WHERE id = 1"
capture update_key
sql -c "UPDATE items_full SET qty = 7, name = NULL WHERE id = 1"
capture update_full
sql -c "DELETE FROM items WHERE id = 2"
capture delete_default
sql -c "DELETE FROM items_full WHERE id = 2"
capture delete_full
# 2600 bytes in a STORAGE EXTERNAL column: stored out of line in the TOAST table.
sql -c "INSERT INTO docs SELECT 1, 't1', string_agg(md5(i::text), '') FROM generate_series(1, 80) i"
capture toast_insert
sql -c "UPDATE docs SET title = 't2' WHERE id = 1"
capture toast_update
sql -c "BEGIN" -c "INSERT INTO items VALUES (20, 'in tx', 1, NULL)" \
  -c "SELECT pg_logical_emit_message(true, 'remix', 'hello')" -c "COMMIT" >/dev/null
capture message_tx
# A non-transactional message does not flush the WAL by itself (before PostgreSQL 17): CHECKPOINT does.
sql -c "SELECT pg_logical_emit_message(false, 'remix.bin', '\x00ff0a'::bytea)" -c "CHECKPOINT" >/dev/null
capture message_nontx
sql -c "INSERT INTO moods VALUES (1, 'happy')"
capture type_enum
sql >/dev/null <<'SQL'
SELECT pg_replication_origin_session_setup('remix_origin');
BEGIN;
SELECT pg_replication_origin_xact_setup('0/ABCDEF01', '2026-01-01 00:00:00+00');
INSERT INTO items VALUES (30, 'from origin', 1, NULL);
COMMIT;
SELECT pg_replication_origin_session_reset();
SQL
capture origin
sql -c "TRUNCATE parent, child RESTART IDENTITY CASCADE"
capture truncate_cascade
sql -c "TRUNCATE items_full"
capture truncate_plain

sql <<'SQL'
INSERT INTO alltypes VALUES (
  1,
  true, 32767, -2147483648, 9223372036854775807, 4294967295,
  3.14, 0.1, '12345678901234567890.123456789012345678901234567890', 12.5,
  E'h\u00e9llo "w\\orld"\n\u2713', 'abc', 'ab', 'pg_name', 'x',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2026-11-24', '10:00:00.123456', '10:00:00+02',
  '2026-11-24 10:00:00.123456', '2026-11-24 10:00:00.5+02', '1 day 02:00:00',
  '{"b": [1, 2.50, null], "a": "x"}', '{"b": [1, 2.50, null], "a": "x"}', '\x000102fffe',
  '{t,f,NULL}', '{1,-2}', '{1,2,3}', '{9223372036854775807,-1}', '{"a b","c\"d",plain}', '{x,y}',
  '{1.5,-0.25}', '{0.1,1e300}', '{1.10,-99999999999999999999.99}',
  '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{2026-11-24,2000-02-29}',
  '{"2026-11-24 10:00:00"}', '{"2026-11-24 10:00:00+00","1900-01-01 00:00:00+00"}',
  ARRAY['{"k": 1}'::json, '[1, "two"]'::json], ARRAY['{"k": 1}'::jsonb], ARRAY['\x0102'::bytea, '\x'::bytea],
  'ok', 42
), (
  2,
  false, -32768, 0, -9223372036854775808, 0,
  'NaN', '-Infinity', 'NaN', -0.01,
  '', NULL, NULL, '', NULL,
  NULL, 'infinity', '24:00:00', NULL,
  '-infinity', 'infinity', '-1 years -2 mons +3 days -04:05:06.789',
  '[]', '"str"', '',
  '{}', '{{1,2},{3,4}}', '[0:2]={1,NULL,3}', NULL,
  E'{"",NULL,"NULL","a,b","{x}","back\\\\slash"," sp "}', '{}',
  '{NaN,Infinity,-Infinity}', '{-0,5e-324}', '{NaN,-1.000}',
  '{}', '{infinity,-infinity}',
  '{-infinity,"0044-03-15 12:00:00 BC"}', '{"1999-12-31 23:59:59.999999+00"}',
  '{}', '{"{\"k\": [true, false]}"}', '{NULL}',
  NULL, NULL
);
SQL
capture types_utc peek
capture types_local get "SET TimeZone = 'Asia/Kolkata'; SET IntervalStyle = 'postgres';"
