"""Who may call what: each caller's role and the gRPC methods each role may call (pure).

Theory of operation
-------------------
A call reaches a node authenticated one of two ways (quorumdb/rpc.py enforces it):

- **A certificate of this cluster** (mutual TLS; quorumdb/certs.py). Its CN is a node's name,
  whose service in the cluster file is the caller's role (`journal`, `adjudicator`, `storage`,
  `compute`), or `quorumdb-admin`, the tools' certificate (`admin`). The journal, adjudicator and
  storage nodes accept only such callers: the TLS handshake refuses a caller without a
  certificate or with another cluster's.
- **A token** (quorumdb/tokens.py: the same signed, expiring tokens as the PostgreSQL endpoint)
  in the call's `authorization: Bearer <token>` metadata, over server-authenticated TLS: the
  role `client`. Compute nodes (the client API) and the supervisor (chaos actions) accept
  tokens, and the admin certificate, and nothing else.

`CALLS` lists, per role, every method that role's code calls, and nothing more: a compute node
cannot append to the journal or fence it, storage cannot fence or commit, a client reaches only
the client API and the supervisor. A method not listed for the caller's role is refused with
PERMISSION_DENIED naming the role and the method. `Status` is open to every authenticated
caller (tools and the console watch every node).
"""
from __future__ import annotations

from typing import Mapping

ADMIN = "admin"
CLIENT = "client"
ROLES = ("journal", "adjudicator", "storage", "compute", ADMIN, CLIENT)

_J, _A, _S, _C, _SUP = "/quorumdb.Journal/", "/quorumdb.Adjudicator/", "/quorumdb.Storage/", \
    "/quorumdb.Compute/", "/quorumdb.Supervisor/"

_STATUS = frozenset({_J + "Status", _A + "Status", _S + "Status", _C + "Status"})
_COMPUTE_API = frozenset(_C + m for m in ("OpenSession", "Execute", "Describe", "Copy", "CloseSession", "Status"))
_SUPERVISOR = frozenset(_SUP + m for m in ("Nodes", "Kill", "Restart", "Pause", "Resume", "Stop", "KillAz",
                                            "RestartAz", "Partition", "Heal", "KillLeader", "KillAll",
                                            "RestartAll"))

CALLS: Mapping[str, frozenset[str]] = {
    # The adjudicator leader writes and fences the journal (journal/writer.py); standbys and a
    # secondary region's agent read it (journal/follower.py) and ask the other region's leader.
    "adjudicator": _STATUS | {_J + "Fence", _J + "Append", _J + "AppendStream", _J + "ReadEntries",
                              _J + "Subscribe", _A + "RegionPoint", _A + "ReportReplica"},
    # Storage follows the journal, reports what it holds, and repairs from its peers.
    "storage": _STATUS | {_J + "Subscribe", _J + "ReadEntries", _J + "ReportScl", _S + "ReadLog",
                          _S + "ReadCheckpoint"},
    # A compute node commits through the adjudicator leader and reads from storage.
    "compute": _STATUS | {_A + "Commit", _A + "CommitStream", _A + "RegionPoint", _S + "Get", _S + "Scan",
                          _S + "ReadStream", _J + "Subscribe"},
    # Journal replicas call no one.
    "journal": _STATUS,
    # The tools with the data directory: watching, backtrack, switchover, takeover, backups.
    ADMIN: _STATUS | _COMPUTE_API | _SUPERVISOR | {
        _A + "TakeOver", _A + "Backtrack", _A + "RegionPoint", _A + "Switchover", _A + "Promote",
        _J + "ReadEntries", _J + "Subscribe", _S + "ReadLog", _S + "ReadCheckpoint", _S + "Get", _S + "Scan"},
    CLIENT: _COMPUTE_API | _SUPERVISOR,
}
assert set(CALLS) == set(ROLES)

# Services that accept token callers (server-authenticated TLS, no client certificate required).
TOKEN_SERVICES = ("quorumdb.Compute", "quorumdb.Supervisor")


def role_of(common_name: str, services: Mapping[str, str]) -> str | None:
    """The role of a certificate's CN: a node's service (storage, ...) or admin; None if unknown."""
    if common_name == "quorumdb-admin":
        return ADMIN
    service = services.get(common_name)
    return service if service in CALLS else None


def allowed(role: str | None, method: str) -> bool:
    return role is not None and method in CALLS.get(role, ())


def denial(role: str | None, method: str) -> str:
    """The PERMISSION_DENIED / UNAUTHENTICATED text for a refused call."""
    if role is None:
        return f"{method}: the caller is not authenticated (no certificate of this cluster and no valid token)"
    return f"{method}: a {role} caller may not call it"
