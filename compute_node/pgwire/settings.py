"""Run-time settings of a PostgreSQL connection: SET, RESET, SHOW (pure).

Clients set and read a handful of settings on connect (psycopg: client_encoding; SQLAlchemy:
`SHOW standard_conforming_strings`, `SHOW transaction isolation level`; pg8000 and JDBC:
extra_float_digits, DateStyle). Settings the server really honours are validated: the only
client encoding is UTF8, the only DateStyle ISO, the only time zone UTC, the only isolation
level REPEATABLE READ (DSQL's), standard_conforming_strings is always on, bytea_output hex.
`statement_timeout` is honoured (the connection's statements get min(node limit, setting)).
Other well-known settings are stored and echoed; an unknown name is 42704 as in PostgreSQL,
except names with a dot (extension / custom settings), which PostgreSQL also accepts.
SET LOCAL lasts until the end of the transaction block and ROLLBACK TO restores the settings of
its savepoint (compute_node/pgwire/bridge.py follows the block).

Settings marked `report` are sent to the client as ParameterStatus when they change.
"""
from __future__ import annotations

import dataclasses
import re

from quorumdb import errors
from quorumdb.errors import SqlError

# PostgreSQL 15: the catalog, the SQL corpus and psql/pg_dump are checked against PostgreSQL 15, and
# pg_dump refuses a server of a newer major version than its own (Debian bookworm ships 15).
SERVER_VERSION = "15.0 (QuorumDB)"
SERVER_VERSION_NUM = "150000"


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str                 # canonical spelling (as SHOW ALL prints it)
    default: str
    report: bool = False      # sent as ParameterStatus
    read_only: bool = False
    description: str = ""


_SETTINGS = [
    Setting("server_version", SERVER_VERSION, report=True, read_only=True, description="QuorumDB answers as PostgreSQL 15."),
    Setting("server_version_num", SERVER_VERSION_NUM, read_only=True),
    Setting("server_encoding", "UTF8", report=True, read_only=True),
    Setting("client_encoding", "UTF8", report=True, description="Only UTF8."),
    Setting("DateStyle", "ISO, MDY", report=True, description="Only ISO output."),
    Setting("IntervalStyle", "postgres", report=True),
    Setting("TimeZone", "UTC", report=True, description="Only UTC."),
    Setting("integer_datetimes", "on", report=True, read_only=True),
    Setting("standard_conforming_strings", "on", report=True, description="Always on."),
    Setting("application_name", "", report=True),
    Setting("is_superuser", "off", report=True, read_only=True),
    Setting("session_authorization", "", report=True, read_only=True),
    Setting("default_transaction_read_only", "off", report=True),
    Setting("in_hot_standby", "off", report=True, read_only=True),
    Setting("scram_iterations", "4096", report=True, read_only=True),
    Setting("transaction_isolation", "repeatable read", description="DSQL's only level: snapshot isolation."),
    Setting("default_transaction_isolation", "repeatable read"),
    Setting("transaction_read_only", "off", read_only=True),
    Setting("search_path", '"$user", public'),
    Setting("statement_timeout", "0", description="0 = the node's limit; a smaller value in ms applies."),
    Setting("lock_timeout", "0"),
    Setting("idle_in_transaction_session_timeout", "0"),
    Setting("idle_session_timeout", "0"),
    Setting("extra_float_digits", "1"),
    Setting("bytea_output", "hex", description="Only hex."),
    Setting("client_min_messages", "notice"),
    Setting("escape_string_warning", "on"),
    Setting("synchronous_commit", "on"),
    Setting("row_security", "on"),
    Setting("jit", "off"),
    Setting("plan_cache_mode", "auto"),
    Setting("work_mem", "4MB"),
    Setting("max_identifier_length", "63", read_only=True),
    Setting("default_table_access_method", "heap", description="Tables report the heap access method (pg_am)."),
    Setting("default_tablespace", ""),
    Setting("block_size", "8192", read_only=True),
    Setting("check_function_bodies", "on"),     # a pg_dump script sets these two (no functions, no XML here)
    Setting("xmloption", "content"),
    Setting("synchronize_seqscans", "on"),      # pg_dump sets these two at start
    Setting("quote_all_identifiers", "off"),
    Setting("max_parallel_workers_per_gather", "0"),
    Setting("max_connections", "10000", read_only=True),
    Setting("lc_collate", "C", read_only=True),
    Setting("lc_ctype", "C", read_only=True),
    Setting("lc_messages", "C"),
    Setting("lc_monetary", "C"),
    Setting("lc_numeric", "C"),
    Setting("lc_time", "C"),
    Setting("default_text_search_config", "pg_catalog.english"),
    Setting("cursor_tuple_fraction", "0.1"),
    Setting("geqo", "on"),
    Setting("enable_seqscan", "on"),
    Setting("xmloption", "content"),
    Setting("array_nulls", "on"),
    Setting("backslash_quote", "safe_encoding"),
    Setting("password_encryption", "scram-sha-256"),
]
SETTINGS = {setting.name.lower(): setting for setting in _SETTINGS}
ALIASES = {"timezone": "timezone", "time zone": "timezone", "names": "client_encoding",
           "transaction isolation level": "transaction_isolation",
           "session authorization": "session_authorization"}

_UTF8 = {"utf8", "utf-8", "unicode"}
_UTC = {"utc", "etc/utc", "gmt", "etc/gmt", "z", "zulu", "+00", "+00:00", "0", "universal", "etc/universal"}


class Settings:
    def __init__(self, user: str, application_name: str = ""):
        self.values = {key: setting.default for key, setting in SETTINGS.items()}
        self.values["session_authorization"] = user
        self.values["application_name"] = application_name

    def get(self, name: str) -> str:
        key = ALIASES.get(name.lower(), name.lower())
        if key in self.values:
            return self.values[key]
        raise SqlError(errors.UNDEFINED_OBJECT, f'unrecognized configuration parameter "{name}"')

    def reported(self) -> list[tuple[str, str]]:
        return [(SETTINGS[key].name, self.values[key]) for key, setting in SETTINGS.items() if setting.report]

    def set(self, name: str, value: str | None) -> list[tuple[str, str]]:
        """SET name = value (None: DEFAULT / RESET). Returns ParameterStatus changes."""
        key = ALIASES.get(name.lower(), name.lower())
        setting = SETTINGS.get(key)
        if setting is None:
            if "." in key and value is not None:
                self.values[key] = value
                return []
            if "." in key:
                self.values.pop(key, None)
                return []
            raise SqlError(errors.UNDEFINED_OBJECT, f'unrecognized configuration parameter "{name}"')
        if setting.read_only:
            raise SqlError(errors.CANT_CHANGE_RUNTIME_PARAM, f'parameter "{setting.name}" cannot be changed')
        new = setting.default if value is None else _validate(setting, value)
        old = self.values.get(key)
        self.values[key] = new
        return [(setting.name, new)] if setting.report and new != old else []

    def reset_all(self) -> list[tuple[str, str]]:
        changes = []
        for key, setting in SETTINGS.items():
            if not setting.read_only and key not in ("application_name",):
                if self.values[key] != setting.default:
                    self.values[key] = setting.default
                    if setting.report:
                        changes.append((setting.name, setting.default))
        for key in [key for key in self.values if key not in SETTINGS]:
            del self.values[key]
        return changes

    def statement_timeout_s(self) -> float | None:
        """The statement_timeout setting in seconds, or None for 0 (the node's own limit)."""
        milliseconds = _duration_ms(self.values["statement_timeout"])
        return milliseconds / 1000.0 if milliseconds else None

    def show_all(self) -> list[tuple[str, str, str]]:
        return [(setting.name, self.values[key], setting.description) for key, setting in SETTINGS.items()]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h|d|us)?\s*$", re.IGNORECASE)
_DURATION_MS = {None: 1, "us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def _duration_ms(text: str) -> float:
    match = _DURATION.match(text)
    if match is None:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, f'invalid value for parameter "statement_timeout": "{text}"')
    unit = match.group(2).lower() if match.group(2) else None
    return float(match.group(1)) * _DURATION_MS[unit]


def _validate(setting: Setting, value: str) -> str:
    key = setting.name.lower()
    lowered = value.strip().lower()
    if key == "client_encoding":
        if lowered not in _UTF8:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'client encoding "{value}" is not supported: QuorumDB speaks UTF8 only')
        return "UTF8"
    if key == "timezone":
        if lowered not in _UTC:
            raise SqlError(errors.INVALID_PARAMETER_VALUE, f'time zone "{value}" is not supported: QuorumDB uses UTC only')
        return "UTC"
    if key == "datestyle":
        parts = [part.strip().lower() for part in value.split(",")]
        if any(part not in ("iso", "mdy", "dmy", "ymd", "us", "european", "noneuropean") for part in parts) \
                or ("iso" not in parts and any(part in ("us", "european") for part in parts)):
            raise SqlError(errors.INVALID_PARAMETER_VALUE, f'DateStyle "{value}" is not supported: QuorumDB prints ISO only')
        order = "DMY" if "dmy" in parts or "european" in parts else ("YMD" if "ymd" in parts else "MDY")
        return f"ISO, {order}"
    if key in ("transaction_isolation", "default_transaction_isolation"):
        if " ".join(lowered.split()) != "repeatable read":
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"isolation level {value} is not supported",
                           hint="QuorumDB transactions are REPEATABLE READ (snapshot isolation), as Aurora DSQL's.")
        return "repeatable read"
    if key == "standard_conforming_strings":
        if lowered not in ("on", "true", "1", "yes"):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "standard_conforming_strings is always on")
        return "on"
    if key == "bytea_output":
        if lowered != "hex":
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "bytea_output is always hex")
        return "hex"
    if key == "default_transaction_read_only":
        if lowered not in ("off", "false", "0", "no"):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, "read-only transactions are not supported")
        return "off"
    if key == "statement_timeout":
        _duration_ms(value)
        return value.strip()
    if key == "extra_float_digits":
        if not re.match(r"^\s*-?\d+\s*$", value) or not -15 <= int(value) <= 3:
            raise SqlError(errors.INVALID_PARAMETER_VALUE, f'{value} is outside the valid range for parameter "extra_float_digits" (-15 .. 3)')
        return str(int(value))
    return value
