"""SQL errors with PostgreSQL SQLSTATE codes.

Bad input, conflicts and unavailable quorums are ordinary results, raised as
`SqlError` and returned to the client with their SQLSTATE; assertions are kept
for bugs.
"""
from __future__ import annotations

from quorumdb import timefmt

# Every SQLSTATE QuorumDB reports or checks is defined here and only here, named by PostgreSQL's
# condition name (src/backend/utils/errcodes.txt), so a code has one spelling across the roles,
# the tools and the client, and tests/test_sqlstates.py can refuse a bare literal anywhere else.
# A code's first two characters are its class; clients branch on the class as well as the code.

# Class 00: successful completion (the sqlstate label of a commit that succeeded, in metrics).
SUCCESSFUL_COMPLETION = "00000"

# Class 08: connection exception. The statement may or may not have run; clients reconnect.
CLASS_CONNECTION_EXCEPTION = "08"
SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION = "08001"
CONNECTION_DOES_NOT_EXIST = "08003"
CONNECTION_FAILURE = "08006"
PROTOCOL_VIOLATION = "08P01"

# Class 0A: feature not supported.
FEATURE_NOT_SUPPORTED = "0A000"

# Class 21: cardinality violation (a scalar subquery returned more than one row).
CARDINALITY_VIOLATION = "21000"

# Class 22: data exception: a value is malformed or out of range for its type or function.
STRING_DATA_RIGHT_TRUNCATION = "22001"
NUMERIC_VALUE_OUT_OF_RANGE = "22003"
NULL_VALUE_NOT_ALLOWED = "22004"
INVALID_DATETIME_FORMAT = "22007"
DATETIME_FIELD_OVERFLOW = "22008"
SEQUENCE_GENERATOR_LIMIT_EXCEEDED = "2200H"
SUBSTRING_ERROR = "22011"
DIVISION_BY_ZERO = "22012"
INVALID_PRECEDING_OR_FOLLOWING_SIZE = "22013"
INVALID_ARGUMENT_FOR_NTILE_FUNCTION = "22014"
INTERVAL_FIELD_OVERFLOW = "22015"
INVALID_ARGUMENT_FOR_NTH_VALUE_FUNCTION = "22016"
INVALID_REGULAR_EXPRESSION = "2201B"
INVALID_ARGUMENT_FOR_LOGARITHM = "2201E"
INVALID_ARGUMENT_FOR_POWER_FUNCTION = "2201F"
INVALID_ROW_COUNT_IN_LIMIT_CLAUSE = "2201W"
INVALID_ROW_COUNT_IN_RESULT_OFFSET_CLAUSE = "2201X"
CHARACTER_NOT_IN_REPERTOIRE = "22021"
INVALID_PARAMETER_VALUE = "22023"
INVALID_ESCAPE_SEQUENCE = "22025"
INVALID_TEXT_REPRESENTATION = "22P02"
INVALID_BINARY_REPRESENTATION = "22P03"
BAD_COPY_FILE_FORMAT = "22P04"

# Class 23: integrity constraint violation.
NOT_NULL_VIOLATION = "23502"
UNIQUE_VIOLATION = "23505"
CHECK_VIOLATION = "23514"

# Class 25: invalid transaction state.
ACTIVE_SQL_TRANSACTION = "25001"
READ_ONLY_SQL_TRANSACTION = "25006"
NO_ACTIVE_SQL_TRANSACTION = "25P01"
IN_FAILED_SQL_TRANSACTION = "25P02"
# The name this module used before it followed errcodes.txt; kept so existing callers work.
IN_FAILED_TRANSACTION = IN_FAILED_SQL_TRANSACTION

# Class 26: invalid SQL statement name (an unknown prepared statement).
INVALID_SQL_STATEMENT_NAME = "26000"

# Class 28: invalid authorization specification (startup and password checks).
INVALID_AUTHORIZATION_SPECIFICATION = "28000"
INVALID_PASSWORD = "28P01"

# Class 2B: dependent privilege descriptors still exist (DROP of an object others depend on).
DEPENDENT_OBJECTS_STILL_EXIST = "2BP01"

# Class 34: invalid cursor name.
INVALID_CURSOR_NAME = "34000"

# Class 3B: savepoint exception.
INVALID_SAVEPOINT_SPECIFICATION = "3B001"

# Class 3F: invalid schema name.
INVALID_SCHEMA_NAME = "3F000"

# Class 40: transaction rollback. 40001 is the one to retry; 40003 leaves the outcome unknown.
CLASS_TRANSACTION_ROLLBACK = "40"
SERIALIZATION_FAILURE = "40001"
STATEMENT_COMPLETION_UNKNOWN = "40003"

# Aurora DSQL's codes for why a commit got 40001. They are not SQLSTATEs: they travel inside
# the message text ("please retry: (OC000)"), which is how DSQL's clients and ours tell them apart.
DSQL_WRITE_CONFLICT = "OC000"    # another transaction changed a row this one wrote or read
DSQL_SCHEMA_CHANGED = "OC001"    # another transaction changed a table definition this one used
DSQL_RETRY_CODES = (DSQL_WRITE_CONFLICT, DSQL_SCHEMA_CHANGED)

# Class 42: syntax error or access rule violation.
INSUFFICIENT_PRIVILEGE = "42501"
SYNTAX_ERROR = "42601"
DUPLICATE_COLUMN = "42701"
AMBIGUOUS_COLUMN = "42702"
UNDEFINED_COLUMN = "42703"
UNDEFINED_OBJECT = "42704"
DUPLICATE_ALIAS = "42712"
AMBIGUOUS_FUNCTION = "42725"
GROUPING_ERROR = "42803"
DATATYPE_MISMATCH = "42804"
WRONG_OBJECT_TYPE = "42809"
CANNOT_COERCE = "42846"
UNDEFINED_FUNCTION = "42883"
GENERATED_ALWAYS = "428C9"
UNDEFINED_TABLE = "42P01"
UNDEFINED_PARAMETER = "42P02"
DUPLICATE_CURSOR = "42P03"
DUPLICATE_PREPARED_STATEMENT = "42P05"
DUPLICATE_TABLE = "42P07"
INVALID_COLUMN_REFERENCE = "42P10"
INVALID_TABLE_DEFINITION = "42P16"
INVALID_RECURSION = "42P19"
WINDOWING_ERROR = "42P20"

# Class 53: insufficient resources (connection admission).
TOO_MANY_CONNECTIONS = "53300"
CONFIGURATION_LIMIT_EXCEEDED = "53400"

# Class 54: program limit exceeded (QuorumDB's quotas and bounds, see quorumdb/limits.py).
PROGRAM_LIMIT_EXCEEDED = "54000"
TOO_MANY_COLUMNS = "54011"

# Class 55: object not in prerequisite state.
OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"   # currval before nextval
CANT_CHANGE_RUNTIME_PARAM = "55P02"

# Class 57: operator intervention (cancel, shutdown, a node that cannot serve yet).
QUERY_CANCELED = "57014"
ADMIN_SHUTDOWN = "57P01"
CANNOT_CONNECT_NOW = "57P03"

# Class XX: internal error (a bug, reported rather than hidden).
INTERNAL_ERROR = "XX000"


def is_connection_error(sqlstate: str) -> bool:
    """True for class 08: the connection, not the statement, failed, so a client reconnects."""
    return sqlstate.startswith(CLASS_CONNECTION_EXCEPTION)

class SqlError(Exception):
    """An error reported to the client with a SQLSTATE."""

    def __init__(self, sqlstate: str, message: str, detail: str = "", hint: str = "", context: str = ""):
        super().__init__(message)
        assert len(sqlstate) == 5, sqlstate
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint
        # Where the error happened, as PostgreSQL's CONTEXT field says it ("COPY t, line 5001").
        self.context = context

    def __repr__(self) -> str:
        return f"SqlError({self.sqlstate!r}, {self.message!r})"


def conflict(key_description: str = "") -> SqlError:
    detail = f"Conflicting key: {key_description}" if key_description else ""
    return SqlError(
        SERIALIZATION_FAILURE,
        f"change conflicts with another transaction, please retry: ({DSQL_WRITE_CONFLICT})",
        detail=detail,
    )


STARTED_BEFORE_BACKTRACK = "transaction started before"


def started_before_backtrack_message(to_ts: int, backtrack_ts: int) -> str:
    """Why a commit is refused after a backtrack (the adjudicator says it; 40001 at the client).

    It names OC000 like every other 40001 the adjudicator gives, so clients that retry on it do."""
    return (f"{STARTED_BEFORE_BACKTRACK} a backtrack of the database to {timefmt.format_utc(to_ts)} "
            f"(backtrack commit_ts {backtrack_ts}); it must be retried: ({DSQL_WRITE_CONFLICT})")


def completion_unknown(why: str) -> SqlError:
    return SqlError(
        STATEMENT_COMPLETION_UNKNOWN,
        f"statement completion unknown: the commit may or may not have happened ({why})",
        hint="Check whether the transaction's effects are present before retrying it.",
    )
