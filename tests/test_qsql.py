"""qsql without a server: statement splitting, prompts, meta-commands, script exit codes.

A FakeConnection plays the compute node: it records the SQL it receives and answers
from a table of canned results, so the shell's printing and control flow are checked
byte for byte.
"""
from __future__ import annotations

import dataclasses
import io
import itertools

import pytest

from tools import qsql
from tools.qsql import MetaOutcome, Shell, StatementSplitter, split_statements


@dataclasses.dataclass
class FakeError(Exception):
    sqlstate: str
    message: str
    detail: str = ""
    hint: str = ""


class FakeLost(Exception):
    sqlstate = "08006"
    message = "connection failure: UNAVAILABLE"


@dataclasses.dataclass
class FakeResult:
    columns: list
    rows: list
    command_tag: str
    error: FakeError | None = None


ONE = FakeResult([("?column?", "integer")], [(1,)], "SELECT 1")
MISSING = FakeResult([], [], "", FakeError("42P01", 'relation "nope" does not exist'))


class FakeConnection:
    def __init__(self, answers=None):
        self.answers = answers or {}
        self.sent: list[str] = []
        self.transaction_status = "I"

    def execute_script(self, sql):
        self.sent.append(sql)
        for statement in sql.split(";"):
            word = statement.strip().split(" ")[0].upper() if statement.strip() else ""
            if word == "BEGIN":
                self.transaction_status = "T"
            elif word in ("COMMIT", "ROLLBACK"):
                self.transaction_status = "I"
        answer = self.answers.get(sql.strip())
        if answer is None:
            if "nope" in sql:
                if self.transaction_status == "T":
                    self.transaction_status = "E"
                return [MISSING]
            if "lost" in sql:
                raise FakeLost()
            return [ONE]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self):
        pass


def fake_clock():
    """Each statement appears to take 1.2345 ms (the clock is read before and after it)."""
    readings = itertools.count()

    def now() -> float:
        reading = next(readings)
        return reading // 2 + (0.0012345 if reading % 2 else 0.0)

    return now


def make_shell(connection=None, **settings):
    out, err = io.StringIO(), io.StringIO()
    shell = Shell(connection or FakeConnection(), qsql.Settings(**settings), out=out, err=err,
                  clock=fake_clock(),
                  is_connection_error=lambda error: isinstance(error, FakeLost))
    return shell, out, err


# --- splitting ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sql", "statements", "rest"),
    [
        ("select 1; select 2;", ["select 1", "select 2"], ""),
        ("select 1;select 2", ["select 1"], "select 2"),
        ("select ';' ; select 'it''s;'", ["select ';'"], "select 'it''s;'"),
        ('select "a;b" from t;', ['select "a;b" from t'], ""),
        ("select $$a;b$$; select $tag$ $$ ; $tag$;", ["select $$a;b$$", "select $tag$ $$ ; $tag$"], ""),
        ("select E'\\';' ;", ["select E'\\';'"], ""),
        ("select 1 -- not; the end\n;", ["select 1 -- not; the end"], ""),
        ("/* a; /* nested; */ still; */ select 1;", ["/* a; /* nested; */ still; */ select 1"], ""),
        (";;  ;", [], ""),
        ("select $1; select a$b;", ["select $1", "select a$b"], ""),
        ("create table t (a int, b text); insert into t values (1, ';');",
         ["create table t (a int, b text)", "insert into t values (1, ';')"], ""),
        # psql's rules, which qsql's own scanner used to miss:
        ("select (1;\n2); select 3", ["select (1;\n2)"], "select 3"),
        ("-- not sent\nselect 1;", ["select 1"], ""),
        ("select E'''\\';'; select a$$$;", ["select E'''\\';'", "select a$$$"], ""),
        ("create function f() returns int begin atomic select 1; end; select 2;",
         ["create function f() returns int begin atomic select 1; end", "select 2"], ""),
    ],
)
def test_split_statements(sql, statements, rest):
    assert split_statements(sql) == (statements, rest)


def test_splitting_is_the_same_fed_one_character_at_a_time():
    sql = "select 'a;b', $q$x;y$q$, \"c;d\" /* ; */ -- ;\n from t; select E'\\'';\n"
    expected, _ = split_statements(sql)
    splitter = StatementSplitter()
    got = []
    for char in sql:
        got += splitter.feed(char)
    assert got == expected
    assert len(got) == 2


def test_prompt_markers_follow_what_is_open():
    splitter = StatementSplitter()
    assert splitter.prompt_marker() == "="
    splitter.feed("select 1\n")
    assert splitter.prompt_marker() == "-"
    splitter.feed("  , 'abc\n")
    assert splitter.prompt_marker() == "'"
    splitter.feed("' , (1 +\n")
    assert splitter.prompt_marker() == "("
    splitter.feed(") /* x\n")
    assert splitter.prompt_marker() == "*"
    splitter.feed("*/ , \"q\n")
    assert splitter.prompt_marker() == '"'
    splitter.feed('" , $$\n')
    assert splitter.prompt_marker() == "$"
    assert splitter.feed("$$;\n") == ["select 1\n  , 'abc\n' , (1 +\n) /* x\n*/ , \"q\n\" , $$\n$$"]
    assert splitter.prompt_marker() == "="


@pytest.mark.parametrize(
    ("marker", "status", "expected"),
    [("=", "I", "quorumdb=> "), ("=", "T", "quorumdb=*> "), ("=", "E", "quorumdb=!> "),
     ("-", "I", "quorumdb-> "), ("-", "T", "quorumdb-*> "), ("'", "I", "quorumdb'> ")],
)
def test_prompt_like_psql(marker, status, expected):
    assert qsql.prompt(marker, status) == expected


def test_interactive_prompts_show_transaction_state():
    connection = FakeConnection()
    shell, out, err = make_shell(connection)
    lines = iter(["begin;", "select * from nope;", "rollback;", "select", "1;"])
    prompts = []

    def read_line(prompt):
        prompts.append(prompt)
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    assert shell.interactive(read_line) == qsql.EXIT_OK
    assert prompts == ["quorumdb=> ", "quorumdb=*> ", "quorumdb=!> ", "quorumdb=> ", "quorumdb-> ", "quorumdb=> "]
    assert connection.sent == ["begin", "select * from nope", "rollback", "select\n1"]
    assert err.getvalue() == 'ERROR:  relation "nope" does not exist\n'


def test_interactive_reconnects_after_a_lost_connection():
    shell, out, err = make_shell()
    replacement = FakeConnection()
    lines = iter(["select lost;", "select 1;"])

    def read_line(prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    assert shell.interactive(read_line, reconnect=lambda: replacement) == qsql.EXIT_OK
    assert replacement.sent == ["select 1"]
    assert "Attempting reset: Succeeded." in err.getvalue()


# --- output and errors ------------------------------------------------------------------------
def test_command_string_prints_each_result_in_order():
    connection = FakeConnection({"create table t (a int); insert into t values (1)": [
        FakeResult([], [], "CREATE TABLE"), FakeResult([], [], "INSERT 0 1")]})
    shell, out, err = make_shell(connection)
    assert shell.run_command_string("create table t (a int); insert into t values (1)") == qsql.EXIT_OK
    assert out.getvalue() == "CREATE TABLE\nINSERT 0 1\n"
    assert connection.sent == ["create table t (a int); insert into t values (1)"]  # one piece, as psql -c


def test_error_format_default_and_verbose():
    shell, out, err = make_shell()
    assert shell.run_command_string("select * from nope") == qsql.EXIT_ERROR
    assert err.getvalue() == 'ERROR:  relation "nope" does not exist\n'
    shell, out, err = make_shell(verbose_errors=True)
    shell.run_command_string("select * from nope")
    assert err.getvalue() == 'ERROR:  42P01: relation "nope" does not exist\n'


def test_script_continues_after_error_without_on_error_stop():
    shell, out, err = make_shell()
    status = shell.run_lines(qsql.iter_lines("select 1;\nselect * from nope;\nselect 2;\n"), "f.sql")
    assert status == qsql.EXIT_ERROR
    assert out.getvalue().count("(1 row)") == 2
    assert err.getvalue() == 'qsql:f.sql:2: ERROR:  relation "nope" does not exist\n'


def test_script_stops_with_3_under_on_error_stop():
    connection = FakeConnection()
    shell, out, err = make_shell(connection, on_error_stop=True)
    status = shell.run_lines(qsql.iter_lines("select 1;\nselect * from nope;\nselect 2;\n"), "f.sql")
    assert status == qsql.EXIT_SCRIPT_STOPPED
    assert connection.sent == ["select 1", "select * from nope"]


def test_script_runs_unterminated_last_statement_and_meta_commands():
    connection = FakeConnection()
    shell, out, err = make_shell(connection)
    status = shell.run_lines(qsql.iter_lines("\\x\nselect 1;\n\\x off\nselect\n 2"), None)
    assert status == qsql.EXIT_OK
    assert connection.sent == ["select 1", "select\n 2"]
    assert out.getvalue() == (
        "Expanded display is on.\n-[ RECORD 1 ]\n?column? | 1\n\n"
        "Expanded display is off.\n ?column? \n----------\n        1\n(1 row)\n\n"
    )


def test_quit_stops_a_script():
    connection = FakeConnection()
    shell, _, _ = make_shell(connection)
    assert shell.run_lines(qsql.iter_lines("select 1;\n\\q\nselect 2;\n"), None) == qsql.EXIT_OK
    assert connection.sent == ["select 1"]


def test_timing_prints_elapsed_like_psql():
    shell, out, _ = make_shell()
    assert shell.run_meta("\\timing on") is MetaOutcome.CONTINUE
    shell.run_sql("select 1")
    assert out.getvalue().endswith("(1 row)\n\nTime: 1.234 ms\n")
    assert out.getvalue().startswith("Timing is on.\n")
    assert qsql.format_elapsed(61234.5678) == "Time: 61234.568 ms (01:01.235)"


def test_unknown_meta_command_is_an_error():
    shell, _, err = make_shell()
    assert shell.run_meta("\\bogus") is MetaOutcome.FAILED
    assert err.getvalue() == "invalid command \\bogus\nTry \\? for help.\n"


def test_dt_and_d_through_information_schema():
    tables = [FakeResult([("table_schema", "text"), ("table_name", "text")], [("public", "accounts")], "SELECT 1")]
    columns = [FakeResult([("column_name", "text"), ("data_type", "text"), ("character_maximum_length", "integer"),
                           ("numeric_precision", "integer"), ("numeric_scale", "integer"), ("is_nullable", "text"),
                           ("column_default", "text")],
                          [("id", "bigint", None, None, None, "NO", None),
                           ("owner", "character varying", 20, None, None, "YES", None),
                           ("balance", "numeric", None, 10, 2, "YES", "0")], "SELECT 3")]
    key = [FakeResult([("column_name", "text")], [("id",)], "SELECT 1")]

    class Catalog(FakeConnection):
        def execute_script(self, sql):
            self.sent.append(sql)
            if "information_schema.tables" in sql:
                return tables
            if "information_schema.columns" in sql:
                return columns
            return key

    shell, out, _ = make_shell(Catalog())
    assert shell.run_meta("\\dt") is MetaOutcome.CONTINUE
    assert shell.run_meta("\\d accounts") is MetaOutcome.CONTINUE
    assert out.getvalue() == (
        "     List of relations\n"
        " Schema |   Name   | Type  \n"
        "--------+----------+-------\n"
        " public | accounts | table\n"
        "(1 row)\n\n"
        # psql's \\d layout (tests/test_format.py has the recorded psql 15 output it follows)
        '                     Table "public.accounts"\n'
        " Column  |         Type          | Collation | Nullable | Default \n"
        "---------+-----------------------+-----------+----------+---------\n"
        " id      | bigint                |           | not null | \n"
        " owner   | character varying(20) |           |          | \n"
        " balance | numeric(10,2)         |           |          | 0\n"
        "Indexes:\n"
        '    "accounts_pkey" PRIMARY KEY (id)\n\n'
    )


def test_d_falls_back_to_column_metadata_without_information_schema():
    unsupported = [FakeResult([], [], "", FakeError("42P01", 'relation "information_schema.columns" does not exist'))]
    probe = [FakeResult([("id", "integer"), ("name", "text")], [], "SELECT 0")]

    class NoCatalog(FakeConnection):
        def execute_script(self, sql):
            self.sent.append(sql)
            return unsupported if "information_schema" in sql else probe

    connection = NoCatalog()
    shell, out, _ = make_shell(connection)
    assert shell.run_meta("\\d T") is MetaOutcome.CONTINUE
    assert connection.sent[-1] == 'SELECT * FROM "t" LIMIT 0'
    assert " id     | integer | \n" in out.getvalue()
    assert "nullability and primary key unknown" in out.getvalue()


def test_parser_keeps_c_and_f_in_order_and_variables():
    args = qsql.build_parser().parse_args(
        ["-p", "7101", "-c", "select 1", "-f", "a.sql", "-c", "\\dt", "-A", "-t", "-v", "VERBOSITY=verbose",
         "-v", "ON_ERROR_STOP=1", "-X"])
    assert args.port == 7101
    assert args.actions == [("command", "select 1"), ("file", "a.sql"), ("command", "\\dt")]
    settings = qsql.settings_from_args(args)
    assert settings.verbose_errors and settings.on_error_stop
    assert not settings.print_options.aligned and settings.print_options.tuples_only


def test_cannot_connect_exits_2(capsys):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    status = qsql.main(["-p", str(port), "-c", "select 1"])
    assert status == qsql.EXIT_CONNECTION
    assert f'connection to server at "127.0.0.1", port {port} failed' in capsys.readouterr().err


def test_d_lists_indexes_and_checks_like_psql_and_di_lists_indexes():
    columns = [FakeResult([("column_name", "text"), ("data_type", "text"), ("character_maximum_length", "integer"),
                           ("numeric_precision", "integer"), ("numeric_scale", "integer"), ("is_nullable", "text"),
                           ("column_default", "text")],
                          [("id", "integer", None, None, None, "NO", None),
                           ("email", "text", None, None, None, "YES", None)], "SELECT 2")]
    indexes = [FakeResult([("indexname", "text"), ("indexdef", "text")], [
        ("t_email_key", "CREATE UNIQUE INDEX t_email_key ON public.t USING btree (email)"),
        ("t_id_email_idx", "CREATE INDEX t_id_email_idx ON public.t USING btree (id, email)"),
        ("t_pkey", "CREATE UNIQUE INDEX t_pkey ON public.t USING btree (id)")], "SELECT 3")]
    constraints = [FakeResult([("constraint_name", "text"), ("constraint_type", "text")],
                              [("t_pkey", "PRIMARY KEY"), ("t_email_key", "UNIQUE"), ("t_id_check", "CHECK")],
                              "SELECT 3")]
    checks = [FakeResult([("constraint_name", "text"), ("check_clause", "text")], [("t_id_check", "id > 0")],
                         "SELECT 1")]
    listing = [FakeResult([("schemaname", "text"), ("indexname", "text"), ("tablename", "text")],
                          [("public", "t_email_key", "t"), ("public", "t_pkey", "t")], "SELECT 2")]

    class Catalog(FakeConnection):
        def execute_script(self, sql):
            self.sent.append(sql)
            if "check_clause" in sql:
                return checks
            if "information_schema.columns" in sql:
                return columns
            if "table_constraints" in sql:
                return constraints
            if "indexdef" in sql:
                return indexes
            if "pg_indexes" in sql:
                return listing
            return [FakeResult([("column_name", "text")], [("id",)], "SELECT 1")]

    shell, out, _ = make_shell(Catalog())
    assert shell.run_meta("\\d t") is MetaOutcome.CONTINUE
    assert out.getvalue().splitlines()[-7:] == [
        "Indexes:",
        '    "t_pkey" PRIMARY KEY, btree (id)',
        '    "t_email_key" UNIQUE CONSTRAINT, btree (email)',
        '    "t_id_email_idx" btree (id, email)',
        "Check constraints:",
        '    "t_id_check" CHECK (id > 0)',
        "",
    ]
    out.truncate(0)
    out.seek(0)
    assert shell.run_meta("\\di") is MetaOutcome.CONTINUE
    assert out.getvalue() == (
        "          List of relations\n"
        " Schema |    Name     | Type  | Table \n"
        "--------+-------------+-------+-------\n"
        " public | t_email_key | index | t\n"
        " public | t_pkey      | index | t\n"
        "(2 rows)\n\n"
    )


def test_include_file_and_set_variables(tmp_path):
    script = tmp_path / "inner.sql"
    script.write_text("SELECT 1;\nSELECT bad;\nSELECT 2;\n")

    class Echo(FakeConnection):
        def execute_script(self, sql):
            self.sent.append(sql)
            if "bad" in sql:
                return [FakeResult([], [], "", FakeError("42703", 'column "bad" does not exist'))]
            return [FakeResult([("?column?", "integer")], [(1,)], "SELECT 1")]

    connection = Echo()
    shell, out, err = make_shell(connection)
    assert shell.run_meta(f"\\i {script}") is MetaOutcome.FAILED
    assert connection.sent == ["SELECT 1", "SELECT bad", "SELECT 2"]
    assert f"qsql:{script}:2: ERROR:  column \"bad\" does not exist" in err.getvalue()
    assert shell.run_meta("\\set ON_ERROR_STOP on") is MetaOutcome.CONTINUE
    assert shell.run_meta("\\set VERBOSITY verbose") is MetaOutcome.CONTINUE
    connection.sent.clear()
    assert shell.run_meta(f"\\i {script}") is MetaOutcome.FAILED
    assert connection.sent == ["SELECT 1", "SELECT bad"]  # stopped at the error
    assert "ERROR:  42703: column" in err.getvalue()
    out.truncate(0)
    out.seek(0)
    shell.run_meta("\\set")
    assert out.getvalue() == "ON_ERROR_STOP = 'on'\nVERBOSITY = 'verbose'\n"
    assert shell.run_meta("\\i /nonexistent/file.sql") is MetaOutcome.FAILED
