"""What a client or tool presents to a cluster: the CA to verify it with, a token, a certificate.

`ClientCredentials` is handed to `quorumdb.rpc.client_channel`: with a CA the channel is TLS
(verifying the node against the cluster's CA) and every call carries the token as
`authorization: Bearer <token>` metadata; a tool with the data directory also presents the
cluster's admin certificate, which the journal, adjudicator and storage nodes require
(quorumdb/authz.py). Without a CA (an `--insecure` cluster) the channel is plaintext.

`resolve` is the one rule every client follows to find them (arguments, then QUORUMDB_TOKEN /
QUORUMDB_CA / QUORUMDB_DATA_DIR, then the default data directory); `for_data_dir` is what a
process holding the cluster's data directory presents (the tools' default).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Mapping

from quorumdb import tokens
from quorumdb import config as config_mod
from quorumdb import regions as regions_mod


@dataclasses.dataclass(frozen=True)
class ClientCredentials:
    ca_pem: bytes | None = None      # None: plaintext, for an --insecure cluster
    token: str | None = None         # sent on every call (compute nodes and the supervisor need it)
    key_pem: bytes | None = None     # the admin certificate's key (node ports need a certificate)
    cert_pem: bytes | None = None

    @property
    def tls(self) -> bool:
        return self.ca_pem is not None


INSECURE = ClientCredentials()


# --- where credentials come from ----------------------------------------------------------------
TOKEN_ENV = "QUORUMDB_TOKEN"
CA_ENV = "QUORUMDB_CA"
DATA_DIR_ENV = "QUORUMDB_DATA_DIR"
CLIENT_TOKEN_LIFETIME_S = 3600
# Where `quorumdb up` puts a cluster by default, relative to the working directory: a client run
# from there finds its credentials without a flag.
DEFAULT_DATA_DIR = "quorumdb-data"


class CredentialsError(ValueError):
    """No usable credentials: the message says what to give (one line, for a command's stderr)."""


def cluster_of(data_dir: pathlib.Path | str) -> config_mod.ClusterConfig:
    """The cluster file of a data directory; for a Global Database, its first region's (every
    region shares the CA and the token secret, so any region's file gives the same credentials)."""
    directory = pathlib.Path(data_dir)
    if regions_mod.is_global(directory):
        try:
            global_cfg = regions_mod.load(directory)
        except (OSError, ValueError) as error:
            raise CredentialsError(f"cannot read {directory / regions_mod.GLOBAL_FILE}: {error}") from None
        if not global_cfg.regions:
            raise CredentialsError(f"{directory / regions_mod.GLOBAL_FILE} names no region")
        path = global_cfg.regions[0].cluster_file
    else:
        path = directory / config_mod.CONFIG_FILE
    if not path.exists():
        raise CredentialsError(f"no cluster file at {path}: is {directory} a QuorumDB data directory?")
    return config_mod.load(path)


def mint_token(data_dir: pathlib.Path | str, user: str = "admin", lifetime_s: int = CLIENT_TOKEN_LIFETIME_S,
               now_s: float | None = None) -> str:
    """A token from the cluster's secret, as `quorumdb token` makes it (the secret of a region of a
    Global Database is the global directory's)."""
    secret = tokens.load_or_create_secret(tokens.secret_dir(pathlib.Path(data_dir).resolve()))
    token, _ = tokens.issue(secret, user, lifetime_s, time.time() if now_s is None else now_s)
    return token


def token_expiry(token: str | None) -> int | None:
    """The expiry (unix seconds) a QuorumDB token carries in clear; None for anything else."""
    parts = (token or "").split(".")
    if len(parts) == 3 and parts[0] == tokens.TOKEN_PREFIX and parts[1].isdigit():
        return int(parts[1])
    return None


def for_cluster(cluster: config_mod.ClusterConfig, user: str = "admin", lifetime_s: int = CLIENT_TOKEN_LIFETIME_S,
                now_s: float | None = None) -> ClientCredentials:
    """Everything a process holding the cluster's data directory presents: the CA, the admin
    certificate (node ports need one) and a fresh token (compute nodes and the supervisor need
    one); INSECURE for an `--insecure` cluster. The tools, the launcher and the tests all use it."""
    from quorumdb import certs  # here: cryptography costs a client that never reads a certificate

    if cluster.insecure:
        return INSECURE
    try:
        ca_pem = certs.read_ca(cluster.certs_path)
        key_pem, cert_pem = certs.read_pair(cluster.certs_path, certs.ADMIN)
        token = mint_token(cluster.data_dir, user, lifetime_s, now_s)
    except (certs.CertError, tokens.TokenError, OSError) as error:
        raise CredentialsError(f"cannot make credentials from {cluster.data_dir}: {error}") from None
    return ClientCredentials(ca_pem=ca_pem, token=token, key_pem=key_pem, cert_pem=cert_pem)


def for_data_dir(data_dir: pathlib.Path | str, user: str = "admin", lifetime_s: int = CLIENT_TOKEN_LIFETIME_S,
                 now_s: float | None = None) -> ClientCredentials:
    """`for_cluster` of the cluster whose data directory this is (a Global Database's: any region's)."""
    return for_cluster(cluster_of(data_dir), user, lifetime_s, now_s)


def _read_ca_file(path: str, where: str) -> bytes:
    try:
        data = pathlib.Path(path).expanduser().read_bytes()
    except OSError as error:
        raise CredentialsError(f"cannot read the cluster CA {path} ({where}): {error.strerror or error}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CredentialsError(f"{path} ({where}) is not a PEM certificate (the cluster's certs/ca.crt)")
    return data


def holds_cluster(data_dir: pathlib.Path | str) -> bool:
    directory = pathlib.Path(data_dir)
    return (directory / config_mod.CONFIG_FILE).exists() or regions_mod.is_global(directory)


NO_TOKEN = ("no token supplied: give --token or set QUORUMDB_TOKEN (`quorumdb token --user admin` makes one), "
            "or give the cluster's --data-dir (or QUORUMDB_DATA_DIR); --insecure for a cluster started with "
            "`quorumdb up --insecure`")
NO_CA = ("no cluster CA to verify the server with: give --ca PATH or set QUORUMDB_CA (the cluster's "
         "certs/ca.crt), or give the cluster's --data-dir (or QUORUMDB_DATA_DIR)")


def resolve(token: str | None = None, ca: str | None = None, data_dir: pathlib.Path | str | None = None,
            insecure: bool = False, *, default_data_dir: pathlib.Path | str | None = None,
            environ: Mapping[str, str] | None = None) -> ClientCredentials:
    """The credentials a client uses, by one rule (psql's, with PGPASSWORD as QUORUMDB_TOKEN):

    1. `insecure`: plaintext, nothing presented (a cluster started with `quorumdb up --insecure`);
    2. the token: `token`, else $QUORUMDB_TOKEN; the CA (a file): `ca`, else $QUORUMDB_CA;
    3. the data directory: `data_dir`, else $QUORUMDB_DATA_DIR, else `default_data_dir` (the
       tools pass ./quorumdb-data) when it holds a cluster: it supplies whatever 2 did not (a token minted
       from its secret, its CA, the admin certificate), or plaintext for an --insecure cluster;
    4. otherwise CredentialsError saying how to give a token (or a CA).
    """
    env = os.environ if environ is None else environ
    if insecure:
        return INSECURE
    token = token or env.get(TOKEN_ENV) or None
    ca_path, ca_where = (ca, "--ca") if ca else (env.get(CA_ENV) or None, CA_ENV)
    directory = data_dir or env.get(DATA_DIR_ENV) or None
    if directory is None and default_data_dir is not None and holds_cluster(default_data_dir):
        directory = default_data_dir
    if directory is not None:
        base = for_data_dir(directory)
        if not base.tls and ca_path is None:
            return INSECURE  # the cluster is --insecure: a token has nothing to protect it in plaintext
        ca_pem = _read_ca_file(ca_path, ca_where) if ca_path is not None else base.ca_pem
        return dataclasses.replace(base, ca_pem=ca_pem, token=token or base.token)
    if token is None:
        raise CredentialsError(NO_TOKEN)
    if ca_path is None:
        raise CredentialsError(NO_CA)
    return ClientCredentials(ca_pem=_read_ca_file(ca_path, ca_where), token=token)


# A minted token is renewed this long before it expires (a session or a tool outlives a token).
TOKEN_RENEW_MARGIN_S = 300.0


class Source:
    """Credentials found by `resolve` (or `given` ready-made), found again shortly before a token
    minted from a data directory expires. A caller checks `due()` (one clock read) before a call
    and, when it is, `renew()`s and makes its channels again with `current`."""

    def __init__(self, token: str | None = None, ca: str | None = None, data_dir: pathlib.Path | str | None = None,
                 insecure: bool = False, *, given: ClientCredentials | None = None,
                 default_data_dir: pathlib.Path | str | None = None) -> None:
        self._args = (token, ca, data_dir, insecure)
        self._given = given
        self._default_data_dir = default_data_dir
        self.current = self.resolve()
        self.renew_at = self._renew_time(None)

    def resolve(self) -> ClientCredentials:
        if self._given is not None:
            return self._given
        return resolve(*self._args, default_data_dir=self._default_data_dir)

    def _renew_time(self, previous_expiry: int | None) -> float | None:
        expiry = token_expiry(self.current.token)
        if self._given is not None or expiry is None or expiry == previous_expiry:
            return None  # a token from the caller or the environment: renewing finds the same one
        return expiry - TOKEN_RENEW_MARGIN_S

    def due(self) -> bool:
        return self.renew_at is not None and time.time() >= self.renew_at

    def renew(self) -> ClientCredentials:
        expiry = token_expiry(self.current.token)
        self.current = self.resolve()
        self.renew_at = self._renew_time(expiry)
        return self.current

    @property
    def token_sent(self) -> bool:
        return self.current.tls and bool(self.current.token)
