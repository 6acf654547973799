"""Drivers' and ORMs' catalog introspection against the PostgreSQL endpoint (in-memory backend).

Each test runs a real client library against tests/pgwire_util.ServerThread (the real server
shell and engine) and checks what it learns about the schema. Their catalog queries run in the
engine: nothing on the endpoint recognises query text any more.
"""
from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import textwrap

import psycopg
import pytest

from tests.pgwire_util import ServerThread

SCHEMA = [
    "CREATE TABLE author (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, born DATE, rating NUMERIC(4,1) DEFAULT 3, "
    "bio TEXT UNIQUE, active BOOLEAN NOT NULL, CHECK (rating >= 0))",
    "CREATE INDEX author_name ON author (name)",
    "CREATE UNIQUE INDEX author_born_name ON author (born DESC, name)",
    "CREATE TABLE book (id BIGINT PRIMARY KEY, author_id INT NOT NULL, title TEXT, price DOUBLE PRECISION)",
]


@pytest.fixture
def server():
    started = ServerThread()
    with psycopg.connect(started.dsn(), autocommit=True) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
    yield started
    started.stop()


def test_psycopg_type_info_and_catalog_queries(server):
    from psycopg.types import TypeInfo
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        info = TypeInfo.fetch(conn, "int4")
        assert (info.oid, info.array_oid, info.name) == (23, 1007, "int4")
        assert TypeInfo.fetch(conn, "hstore") is None  # a type QuorumDB does not have: no row, not an error
        rows = conn.execute("SELECT c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) "
                            "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                            "WHERE c.relname = %s AND a.attnum > 0 ORDER BY a.attnum", ("author",)).fetchall()
        assert rows[:3] == [("author", "id", "integer"), ("author", "name", "character varying(40)"),
                            ("author", "born", "date")]
        # The regression this design removes: a literal mentioning the catalog is data.
        conn.execute("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", (1, "copied from pg_dump output"))
        conn.execute("INSERT INTO notes (id, body) VALUES (2, 'pg_class and pg_catalog.pg_attribute')")
        assert conn.execute("SELECT body FROM notes ORDER BY id").fetchall() == [
            ("copied from pg_dump output",), ("pg_class and pg_catalog.pg_attribute",)]


def test_asyncpg_binary_parameters_and_catalog_reads(server):
    import asyncpg
    import datetime
    import decimal
    import uuid

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user="admin", password=server.token(),
                                     database="postgres")
        try:
            await conn.execute("CREATE TABLE typed (id INT PRIMARY KEY, n NUMERIC(10,2), at TIMESTAMPTZ, u UUID, "
                               "b BYTEA, f DOUBLE PRECISION, ok BOOLEAN, s TEXT)")
            values = (7, decimal.Decimal("12.50"), datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
                      uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), b"\x00\x01\xff", 2.5, True, "x'y")
            # asyncpg encodes each parameter in binary, as the type Describe announced
            await conn.execute("INSERT INTO typed VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", *values)
            row = await conn.fetchrow("SELECT * FROM typed WHERE id = $1 AND s = $2", 7, "x'y")
            assert tuple(row) == values
            oid = await conn.fetchval("SELECT oid FROM pg_catalog.pg_class WHERE relname = $1", "typed")
            assert await conn.fetchval("SELECT $1::oid::regclass::text", oid) == "typed"
            assert await conn.fetchval("SELECT typname FROM pg_type WHERE oid = $1", 1700) == "numeric"
            assert await conn.fetchval("SELECT pg_catalog.format_type(atttypid, atttypmod) FROM pg_attribute "
                                       "WHERE attrelid = $1 AND attname = $2", oid, "n") == "numeric(10,2)"
        finally:
            await conn.close()

    asyncio.run(run())


def test_sqlalchemy_reflection_and_orm_round_trip(server):
    import sqlalchemy
    from sqlalchemy import orm

    engine = sqlalchemy.create_engine(f"postgresql+psycopg://admin:{server.token()}@127.0.0.1:{server.port}/postgres")
    try:
        inspector = sqlalchemy.inspect(engine)
        assert inspector.get_table_names() == ["author", "book"]
        columns = {c["name"]: c for c in inspector.get_columns("author")}
        assert list(columns) == ["id", "name", "born", "rating", "bio", "active"]
        assert str(columns["name"]["type"]) == "VARCHAR(40)" and columns["name"]["nullable"] is False
        assert str(columns["rating"]["type"]) == "NUMERIC(4, 1)" and columns["rating"]["default"] == "3"
        primary_key = inspector.get_pk_constraint("author")
        assert (primary_key["constrained_columns"], primary_key["name"]) == (["id"], "author_pkey")
        indexes = {i["name"]: i for i in inspector.get_indexes("author")}
        assert indexes["author_name"]["column_names"] == ["name"] and indexes["author_name"]["unique"] is False
        assert indexes["author_born_name"]["column_names"] == ["born", "name"]
        assert indexes["author_born_name"]["unique"] is True
        # DESC sorts NULLs first by default, as in PostgreSQL, so SQLAlchemy reports only "desc"
        assert indexes["author_born_name"]["column_sorting"] == {"born": ("desc",)}
        assert [(u["name"], u["column_names"]) for u in inspector.get_unique_constraints("author")] == [
            ("author_bio_key", ["bio"])]
        assert [(c["name"], c["sqltext"]) for c in inspector.get_check_constraints("author")] == [
            ("author_rating_check", "rating >= 0")]
        assert inspector.get_foreign_keys("book") == []

        class Base(orm.DeclarativeBase):
            pass

        class Book(Base):
            __table__ = sqlalchemy.Table("book", Base.metadata, autoload_with=engine)

        with orm.Session(engine) as session:
            session.add_all([Book(id=1, author_id=1, title="Dune", price=9.5), Book(id=2, author_id=1, title="Emma")])
            session.commit()
        with orm.Session(engine) as session:
            found = session.scalars(sqlalchemy.select(Book).where(Book.price.is_(None))).all()
            assert [(book.id, book.title) for book in found] == [(2, "Emma")]
    finally:
        engine.dispose()


def test_django_inspectdb_writes_models_for_the_tables(server):
    # Django's settings are process-global: configure them in a child process.
    script = textwrap.dedent(f"""
        import io, django
        from django.conf import settings
        settings.configure(DATABASES={{"default": {{"ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1",
            "PORT": {server.port}, "USER": "admin", "PASSWORD": {server.token()!r}, "NAME": "postgres"}}}},
            INSTALLED_APPS=[], USE_TZ=True)
        django.setup()
        from django.core.management import call_command
        out = io.StringIO()
        call_command("inspectdb", stdout=out)
        print(out.getvalue())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    models = done.stdout
    assert "Unable to inspect" not in models, models
    assert "class Author(models.Model):" in models and "class Book(models.Model):" in models
    for line in ("id = models.IntegerField(primary_key=True)", "bio = models.TextField(unique=True, blank=True, "
                 "null=True)", "active = models.BooleanField()", "id = models.BigIntegerField(primary_key=True)",
                 "author_id = models.IntegerField()", "price = models.FloatField(blank=True, null=True)",
                 "db_table = 'author'"):
        assert line in models, f"{line!r} not in:\n{models}"
    assert "unique_together = (('born', 'name'),)" in models


def test_unsupported_catalog_reads_fail_naming_the_function_and_the_connection_goes_on(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedFunction, match="pg_stat_get_live_tuples"):
            conn.execute("SELECT pg_catalog.pg_stat_get_live_tuples(c.oid) FROM pg_catalog.pg_class c")
        assert conn.execute("SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'book'").fetchone() == (1,)
        with conn.transaction():
            conn.execute("SELECT relname FROM pg_class")
        out = io.StringIO()
        print(conn.execute("SELECT version()").fetchone()[0], file=out)
        assert out.getvalue().startswith("PostgreSQL 15.0 (QuorumDB")
        # pg_dump's first statement: set_config is SET from a query
        assert conn.execute("SELECT pg_catalog.set_config('search_path', '', false)").fetchone() == ("",)
        assert conn.execute("SHOW search_path").fetchone() == ("",)
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SELECT set_config('no_such_setting', 'x', false)")


def test_read_only_blocks_refuse_writes_and_lock_access_share_is_accepted(server):
    """pg_dump's transaction: SET TRANSACTION ... READ ONLY, then LOCK TABLE ... IN ACCESS SHARE
    MODE per table. A write in a read-only block fails (25006) and fails the block."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute("LOCK TABLE public.book IN ACCESS SHARE MODE")
        assert conn.execute("SELECT count(*) FROM book").fetchone() == (0,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="cannot execute INSERT"):
            conn.execute("INSERT INTO book (id, author_id) VALUES (1, 1)")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT count(*) FROM book").fetchone() == (0,)
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("BEGIN")
            conn.execute("LOCK TABLE book IN EXCLUSIVE MODE")
        conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO book (id, author_id) VALUES (2, 1)")
        with pytest.raises(psycopg.errors.ActiveSqlTransaction):
            conn.execute("SET TRANSACTION READ ONLY")  # after a write: too late, as in PostgreSQL
        conn.execute("ROLLBACK")
        with pytest.raises(psycopg.errors.NoActiveSqlTransaction):
            conn.execute("LOCK TABLE book IN ACCESS SHARE MODE")
