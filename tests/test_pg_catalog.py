"""pg_catalog as relations the engine queries, and the catalog functions, over the in-memory backend.

tests/differential/corpus/11_catalog.sql compares the same relations and functions with a real
PostgreSQL (names and definitions; oids differ there). Here: what only QuorumDB defines (its
oid scheme, the client a session reports, errors that name what is missing).
"""
from __future__ import annotations

import pytest

from compute_node.sessions.session import Session
from compute_node.sql import pg_catalog
from tests.sql_memory_backend import MemoryBackend
from tests.test_sql_statements import fails, ok, rows

SCHEMA = ("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, qty INT DEFAULT 3 CHECK (qty > 0), "
          "code TEXT UNIQUE, note TEXT)", "CREATE INDEX t_name ON t (name)", "CREATE INDEX t_qd ON t (qty DESC, note)")


@pytest.fixture
def session():
    return Session(MemoryBackend(), "catalog")


async def make_schema(session):
    for statement in SCHEMA:
        await ok(session, statement)


async def table_oid(session, name: str) -> int:
    return (await rows(session, f"SELECT oid FROM pg_class WHERE relname = '{name}'"))[0][0]


async def test_pg_class_lists_tables_and_indexes_with_stable_oids(session):
    await make_schema(session)
    found = await rows(session, "SELECT oid, relname, relkind, relnatts, relchecks, relam FROM pg_catalog.pg_class "
                                "WHERE relnamespace = 2200 ORDER BY oid")
    table = found[0][0]
    assert (table - pg_catalog.TABLE_OID_BASE) % 2 == 0, "a table's oid is 16384 + 2 * table_id"
    assert found[0][1:] == ("t", "r", 5, 1, pg_catalog.HEAP_AM_OID)
    assert found[1] == (table + 1, "t_pkey", "i", 1, 0, pg_catalog.BTREE_AM_OID)  # the primary key's index
    assert [row[1] for row in found[2:]] == ["t_code_key", "t_name", "t_qd"]
    # The same snapshot later (no DDL in between) gives the same oids: tools may cache them.
    assert await rows(session, "SELECT oid FROM pg_class WHERE relnamespace = 2200 ORDER BY oid") == [
        (row[0],) for row in found]
    assert await rows(session, "SELECT 't'::regclass::oid, 't_pkey'::regclass::oid") == [(table, table + 1)]


async def test_pg_attribute_index_constraint_and_attrdef_describe_the_columns(session):
    await make_schema(session)
    oid = await table_oid(session, "t")
    assert await rows(session, f"SELECT attnum, attname, atttypid, atttypmod, attnotnull, atthasdef, attlen, "
                               f"attcollation FROM pg_attribute WHERE attrelid = {oid} ORDER BY attnum") == [
        (1, "id", 23, -1, True, False, 4, 0), (2, "name", 1043, 44, True, False, -1, 100),
        (3, "qty", 23, -1, False, True, 4, 0), (4, "code", 25, -1, False, False, -1, 100),
        (5, "note", 25, -1, False, False, -1, 100)]
    assert await rows(session, "SELECT c.relname, i.indkey::text, i.indoption::text, i.indisunique, i.indisprimary "
                               f"FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = {oid} "
                               "ORDER BY c.relname") == [
        ("t_code_key", "4", "0", True, False), ("t_name", "2", "0", False, False),
        ("t_pkey", "1", "0", True, True), ("t_qd", "3 5", "3 0", False, False)]
    assert await rows(session, "SELECT conname, contype, conkey::text, pg_get_constraintdef(oid), "
                               "pg_get_constraintdef(oid, true) FROM pg_constraint "
                               f"WHERE conrelid = {oid} ORDER BY conname") == [
        ("t_code_key", "u", "{4}", "UNIQUE (code)", "UNIQUE (code)"),
        ("t_pkey", "p", "{1}", "PRIMARY KEY (id)", "PRIMARY KEY (id)"),
        ("t_qty_check", "c", "{3}", "CHECK ((qty > 0))", "CHECK (qty > 0)")]  # PostgreSQL's two forms
    assert await rows(session, f"SELECT adnum, pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = {oid}") == [
        (3, "3")]
    # conindid joins a key constraint to the index that enforces it
    assert await rows(session, "SELECT c.conname, i.relname FROM pg_constraint c JOIN pg_class i ON i.oid = c.conindid "
                               "ORDER BY 1") == [("t_code_key", "t_code_key"), ("t_pkey", "t_pkey")]


async def test_pg_type_holds_the_builtin_types_with_postgresqls_oids(session):
    assert await rows(session, "SELECT oid, typname, typlen, typtype, typarray, typcategory FROM pg_type "
                               "WHERE typname IN ('int4', 'text', 'varchar', 'bool', '_int4') ORDER BY oid") == [
        (16, "bool", 1, "b", 1000, "B"), (23, "int4", 4, "b", 1007, "N"), (25, "text", -1, "b", 1009, "S"),
        (1007, "_int4", -1, "b", 0, "A"), (1043, "varchar", -1, "b", 1015, "S")]
    result = await ok(session, "SELECT oid, typname FROM pg_type WHERE oid = 'int8'::regtype")
    assert result.rows == [(20, "int8")]
    assert result.columns == [("oid", "oid"), ("typname", "name")]


async def test_qualified_and_unqualified_names_resolve_to_the_same_relation(session):
    await make_schema(session)
    qualified = await rows(session, "SELECT count(*) FROM pg_catalog.pg_attribute")
    assert await rows(session, "SELECT count(*) FROM pg_attribute") == qualified
    assert await rows(session, "SELECT count(*) FROM PG_CATALOG.PG_ATTRIBUTE") == qualified
    assert await rows(session, "SELECT table_name FROM information_schema.tables") == [("t",)]
    await fails(session, "SELECT * FROM pg_catalog.pg_stat_activity", "42P01",
                'relation "pg_catalog.pg_stat_activity" does not exist')
    await fails(session, "INSERT INTO pg_class (relname) VALUES ('x')", "0A000")
    await fails(session, "DELETE FROM pg_catalog.pg_attribute", "0A000")


async def test_the_catalog_is_the_transactions_snapshot(session):
    await make_schema(session)
    await ok(session, "BEGIN")
    await ok(session, "CREATE TABLE u (k INT PRIMARY KEY)")
    await ok(session, "DROP TABLE t")
    assert await rows(session, "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 2200") == [("u",)]
    assert await rows(session, "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                               "WHERE c.relname = 'u'") == [(1,)]
    await ok(session, "ROLLBACK")
    assert await rows(session, "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 2200") == [("t",)]


async def test_session_functions_report_the_sessions_client(session):
    session.client = pg_catalog.ClientInfo("alice", "shop", 4242, None)
    result = await ok(session, "SELECT current_user, session_user, current_database(), pg_backend_pid(), "
                               "current_schema(), pg_catalog.version() LIKE 'PostgreSQL 15%'")
    assert result.rows == [("alice", "alice", "shop", 4242, "public", True)]
    assert result.columns[0] == ("current_user", "name")
    assert await rows(session, "SELECT datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding) "
                               "FROM pg_database") == [("shop", "alice", "UTF8")]
    assert await rows(session, "SELECT rolname, rolsuper FROM pg_roles WHERE rolname !~ '^pg_'") == [("alice", True)]
    await ok(session, "SELECT 1")  # the default search_path: "$user" names no schema, so public
    assert await rows(session, "SELECT current_schemas(true)::text") == [("{pg_catalog,public}",)]
    assert await rows(session, "SELECT current_setting('server_version_num'), "
                               "current_setting('no.such_setting', true)") == [("150000", None)]
    await fails(session, "SELECT current_setting('no_such_setting')", "42704")


async def test_regclass_regtype_and_oid_casts(session):
    await make_schema(session)
    oid = await table_oid(session, "t")
    assert await rows(session, f"SELECT {oid}::regclass::text, '\"t\"'::regclass::oid = {oid}, "
                               f"'public.t'::regclass = {oid}, 'integer'::regtype::text, "
                               f"'varchar[]'::regtype::text, '{oid}'::oid, 'pg_class'::regclass::oid") == [
        ("t", True, True, "integer", "character varying[]", oid, 1259)]
    await fails(session, "SELECT 'missing'::regclass", "42P01", 'relation "missing" does not exist')
    await fails(session, "SELECT 'nosuchtype'::regtype", "42704")
    await fails(session, "SELECT 'x1'::oid", "22P02")
    assert await rows(session, "SELECT to_regclass('missing'), to_regclass('t')::text") == [(None, "t")]


async def test_unsupported_constructs_name_what_is_missing_and_the_session_goes_on(session):
    await make_schema(session)
    await fails(session, "SELECT pg_catalog.pg_stat_get_numscans(c.oid) FROM pg_class c", "42883")
    await fails(session, "SELECT 'a' COLLATE \"de_DE\" < 'b'", "0A000",
                'collation "de_DE" is not supported (text compares in C order)')
    await fails(session, "SELECT (ARRAY[1, 2, 3])[1:2]", "0A000")
    await fails(session, "SELECT 'abc' ~ '('", "2201B")
    await fails(session, "SELECT 1 ~ 'a'", "42883")
    await fails(session, "SELECT relname OPERATOR(myschema.~) 'x' FROM pg_class", "42883")
    await fails(session, "SELECT 1 = ALL (SELECT 1)", "0A000", "= ALL (subquery) is not supported")
    assert await rows(session, "SELECT 1 = ALL (ARRAY[1, 1]), 1 = ALL (ARRAY[1, 2]), 1 < ALL (ARRAY[2, NULL]), "
                               "1 = ALL (ARRAY[]::int[])") == [(True, False, None, True)]
    assert await rows(session, "SELECT relname FROM pg_class WHERE relname ~ '^t_q'") == [("t_qd",)]


async def test_psqls_publication_footer_runs_in_the_engine(session):
    """The one psql 15 query that needed the removed text recogniser: generate_series in FROM over
    an outer column, array_upper, an int2vector cast to int2[] and subscripted."""
    await make_schema(session)
    oid = await table_oid(session, "t")
    publications = (
        "SELECT pubname, NULL, NULL FROM pg_catalog.pg_publication p JOIN pg_catalog.pg_publication_namespace pn "
        "ON p.oid = pn.pnpubid JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.pnnspid "
        f"WHERE pc.oid ='{oid}' and pg_catalog.pg_relation_is_publishable('{oid}') "
        "UNION SELECT pubname, pg_get_expr(pr.prqual, c.oid), (CASE WHEN pr.prattrs IS NOT NULL THEN "
        "(SELECT string_agg(attname, ', ') FROM pg_catalog.generate_series(0, "
        "pg_catalog.array_upper(pr.prattrs::pg_catalog.int2[], 1)) s, pg_catalog.pg_attribute "
        "WHERE attrelid = pr.prrelid AND attnum = prattrs[s]) ELSE NULL END) FROM pg_catalog.pg_publication p "
        "JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid "
        f"WHERE pr.prrelid = '{oid}' UNION SELECT pubname, NULL, NULL FROM pg_catalog.pg_publication p "
        f"WHERE p.puballtables AND pg_catalog.pg_relation_is_publishable('{oid}') ORDER BY 1")
    result = await ok(session, publications)
    assert result.rows == [] and [name for name, _ in result.columns] == ["pubname", "?column?", "?column?"]
    assert await rows(session, "SELECT s, (ARRAY['a', 'b', 'c'])[s] FROM generate_series(1, 3, 2) s") == [
        (1, "a"), (3, "c")]
    assert await rows(session, "SELECT array_upper(indkey, 1), array_upper(ARRAY[5, 6], 1), cardinality(indkey) "
                               "FROM pg_index WHERE indexrelid = 't_qd'::regclass") == [(1, 2, 2)]
    await fails(session, "SELECT * FROM generate_series(1, 3, 0)", "22023", "step size cannot equal zero")


async def test_arrays_and_set_returning_functions_the_catalog_queries_use(session):
    await make_schema(session)
    oid = await table_oid(session, "t")
    assert await rows(session, "SELECT i.indexrelid::regclass::text, unnest(i.indkey) AS attnum, "
                               "generate_subscripts(i.indkey, 1) AS ord FROM pg_index i "
                               f"WHERE i.indrelid = {oid} AND NOT i.indisprimary AND i.indnatts = 2") == [
        ("t_qd", 3, 0), ("t_qd", 5, 1)]
    assert await rows(session, "SELECT k.key, k.option, k.n FROM pg_index i, unnest(i.indkey, i.indoption) "
                               "WITH ORDINALITY k(key, option, n) WHERE i.indexrelid = 't_qd'::regclass") == [
        (3, 3, 1), (5, 0, 2)]
    assert await rows(session, "SELECT array_agg(attname ORDER BY attnum DESC)::text FROM pg_attribute "
                               f"WHERE attrelid = {oid} AND attnum <= 2") == [("{name,id}",)]
    assert await rows(session, f"SELECT indkey[0], indkey[1], conkey[1] FROM pg_index JOIN pg_constraint "
                               f"ON conindid = indexrelid WHERE contype = 'p' AND conrelid = {oid}") == [(1, None, 1)]
    assert await rows(session, "SELECT array_to_string(ARRAY(SELECT relname FROM pg_class WHERE relnamespace = 2200 "
                               "ORDER BY relname), ', ')") == [("t, t_code_key, t_name, t_pkey, t_qd",)]
    assert await rows(session, "SELECT relname FROM pg_class WHERE relkind = ANY (ARRAY['r', 'p']) "
                               "AND relnamespace = 2200") == [("t",)]


async def test_catalog_arrays_group_join_and_compare(session):
    """Arrays (indkey, array_agg) are values like others: GROUP BY, DISTINCT, joins and = work."""
    await make_schema(session)
    assert await rows(session, "SELECT indkey::text, count(*) FROM pg_index GROUP BY indkey ORDER BY 1") == [
        ("1", 1), ("2", 1), ("3 5", 1), ("4", 1)]
    assert await rows(session, "SELECT DISTINCT indoption::text FROM pg_index ORDER BY 1") == [("0",), ("3 0",)]
    assert await rows(session, "SELECT count(*) FROM pg_index a JOIN pg_index b ON a.indkey = b.indkey") == [(4,)]
    assert await rows(session, "SELECT array_agg(DISTINCT relkind)::text FROM pg_class WHERE relnamespace = 2200") == [
        ("{i,r}",)]
    await fails(session, "SELECT array_agg(indkey) FROM pg_index", "0A000")


async def test_sequences_are_relations_with_oids_from_their_ids(session):
    await ok(session, "CREATE TABLE s1 (id SERIAL PRIMARY KEY, v TEXT)")
    await ok(session, "CREATE SEQUENCE counter AS smallint START 7")
    found = await rows(session, "SELECT oid, relname, relkind FROM pg_class WHERE relkind IN ('r', 'S') AND "
                                "relnamespace = 2200 ORDER BY oid")
    table_oid_, sequence_oid_, counter_oid = (row[0] for row in found)
    assert [row[1:] for row in found] == [("s1", "r"), ("s1_id_seq", "S"), ("counter", "S")]
    # One id counter numbers tables, indexes and sequences: 16384 + 2 * id names one object.
    assert len({table_oid_, table_oid_ + 1, sequence_oid_, counter_oid}) == 4
    assert all((oid - pg_catalog.TABLE_OID_BASE) % 2 == 0 for oid in (sequence_oid_, counter_oid))
    assert await rows(session, "SELECT 'counter'::regclass::oid, seqtypid FROM pg_sequence "
                               "WHERE seqrelid = 'counter'::regclass") == [(counter_oid, 21)]
    assert await rows(session, "SELECT classid, objid, objsubid, refclassid, refobjid, refobjsubid, deptype "
                               "FROM pg_depend WHERE classid = 1259") == [
        (1259, sequence_oid_, 0, 1259, table_oid_, 1, "a")]


async def test_a_sequence_reads_as_a_relation_within_the_transaction(session):
    await ok(session, "BEGIN")
    await ok(session, "CREATE SEQUENCE mine START 3")
    assert await rows(session, "SELECT last_value, log_cnt, is_called FROM mine") == [(3, 0, False)]
    assert await rows(session, "SELECT m.last_value, x FROM mine m, (VALUES (1), (2)) v(x) ORDER BY x") == [
        (3, 1), (3, 2)]
    await ok(session, "ROLLBACK")
    await fails(session, "SELECT * FROM mine", "42P01")
    await ok(session, "CREATE SEQUENCE mine START 3")
    # A CTE of the same name hides the sequence, as in PostgreSQL.
    assert await rows(session, "WITH mine AS (SELECT 9 AS last_value) SELECT last_value FROM mine") == [(9,)]
    await ok(session, "SELECT setval('mine', 40)")
    assert await rows(session, "SELECT last_value, is_called FROM public.mine") == [(40, True)]
    assert await rows(session, "SELECT sequencename, last_value FROM pg_sequences") == [("mine", 40)]
    await ok(session, "DROP SEQUENCE mine")
    await fails(session, "SELECT * FROM mine", "42P01")


def test_a_sequence_stored_without_its_type_reads_as_its_columns_type():
    """Entries written before sequences kept their type: a serial's is its column's type, a
    standalone one is bigint (CREATE SEQUENCE's default)."""
    from compute_node.sql import bulk, types
    from compute_node.sql.catalog import ColumnDef, TableDef
    table = TableDef(5, "t", (ColumnDef("id", types.SMALLINT, True, "nextval('t_id_seq'::regclass)",
                                        sequence="t_id_seq"),), (0,))
    old_serial = bulk.SequenceDef("t_id_seq", 6, 1, 1, 1, 32767, 1, ("t", "id"), None)
    old_standalone = bulk.SequenceDef("s", 7, 1, 1, 1, 100, 1, None, None)
    snapshot = pg_catalog.Snapshot([table], sequences=[old_serial, old_standalone])
    assert [(row[0], row[1]) for row in pg_catalog.CATALOG_RELATIONS["pg_sequence"].build(snapshot)] == [
        (pg_catalog.TABLE_OID_BASE + 12, 21), (pg_catalog.TABLE_OID_BASE + 14, 20)]


async def test_oids_fit_32_bits_and_survive_truncate_and_rewrites(session):
    await ok(session, "CREATE TABLE loaded (id INT, v INT)")
    await ok(session, "INSERT INTO loaded VALUES (1, 1), (2, 2)")
    await ok(session, "CREATE INDEX loaded_v ON loaded (v)")  # built in a private keyspace, flushed ahead
    before = await rows(session, "SELECT 'loaded'::regclass::oid, 'loaded_v'::regclass::oid")
    await ok(session, "TRUNCATE loaded")
    await ok(session, "INSERT INTO loaded VALUES (1, 1), (2, 2)")
    assert await rows(session, "SELECT 'loaded'::regclass::oid, 'loaded_v'::regclass::oid") == before
    await ok(session, "ALTER TABLE loaded ADD PRIMARY KEY (id)")
    after = await rows(session, "SELECT oid, relname FROM pg_class WHERE relname LIKE 'loaded%' ORDER BY oid")
    assert after == [(before[0][0], "loaded"), (before[0][0] + 1, "loaded_pkey"), (before[0][1], "loaded_v")]
    assert all(0 < oid < 2 ** 31 for oid, _ in after)
