"""`quorumdb certs`: the cluster's certificates, their expiry, and rotating a node's certificate.

    quorumdb certs [list] [--data-dir DIR] [--json]   one row per certificate (CA, admin, nodes)
    quorumdb certs rotate NODE [--data-dir DIR]       a new key and certificate for one node
    quorumdb certs rotate --all [--data-dir DIR]      ... for every node of the cluster file
    quorumdb certs init --cluster FILE [--certs-dir DIR]
                                 the CA and every node's certificate for a cluster file, made
                                 outside any data directory: for a deployment that mounts them
                                 (scripts/compose-certs does it for docker-compose.yml)

The certs directory is the cluster file's (`certs_dir`, by default DIR/certs; quorumdb/certs.py
describes its layout). A Global Database's directory (DIR/global.toml) has one CA for all of its
regions, and its node certificates are named REGION/NODE.

Rotation writes the new pair in place (atomic renames) and does nothing else: a running node reads
its certificate files for every new TLS handshake, so it serves and calls with the new certificate
from its next connection on, without a restart. Connections already open keep the old one, which
stays valid until it expires (both are signed by the same CA).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import sys
from typing import TextIO

from quorumdb import certs as certs_mod
from quorumdb import config as config_mod
from quorumdb import regions as regions_mod

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SHORT_FINGERPRINT_CHARS = 16

USAGE = ("quorumdb certs [list] [--data-dir DIR] [--json] | quorumdb certs rotate (NODE | --all) [--data-dir DIR] "
         "| quorumdb certs init --cluster FILE [--certs-dir DIR]")


class CertsCliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message, self.code = message, code


@dataclasses.dataclass(frozen=True)
class Target:
    """What `certs` works on: the certs directory and the certificate name of every node."""
    data_dir: pathlib.Path
    certs_dir: pathlib.Path
    nodes: tuple[str, ...]      # certificate names (REGION/NODE in a Global Database)
    insecure: bool


def add_parser(commands: argparse._SubParsersAction, default_data_dir: str) -> None:
    parser = commands.add_parser(
        "certs", help="list the cluster's certificates and their expiry, or rotate a node's certificate",
        usage=USAGE, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, default_data_dir)


def add_arguments(parser: argparse.ArgumentParser, default_data_dir: str) -> None:
    parser.add_argument("certs_action", nargs="?", default="list", choices=["list", "rotate", "init"],
                        metavar="list|rotate|init", help="list (the default), rotate or init")
    parser.add_argument("node", nargs="?", default=None, metavar="NODE",
                        help="for rotate: the node (REGION/NODE in a Global Database; quorumdb-admin for the "
                             "tools' certificate)")
    parser.add_argument("--all", action="store_true", help="for rotate: every node of the cluster file")
    parser.add_argument("--data-dir", default=os.environ.get("QUORUMDB_DATA_DIR", default_data_dir),
                        help=f"the cluster's data directory, or a Global Database's (default ./{default_data_dir} "
                             "or $QUORUMDB_DATA_DIR)")
    parser.add_argument("--json", action="store_true", help="for list: print a JSON list")
    parser.add_argument("--cluster", default=None, metavar="FILE",
                        help="for init: the cluster file whose nodes get certificates (their host names "
                             "become the certificates' names)")
    parser.add_argument("--certs-dir", default=None, metavar="DIR",
                        help="for init: where to write them (default: the cluster file's certs_dir)")


def resolve(data_dir: pathlib.Path | str) -> Target:
    """The certs directory and node certificate names of a cluster's (or Global Database's) directory."""
    data_dir = pathlib.Path(data_dir).resolve()
    cluster_file = data_dir / config_mod.CONFIG_FILE
    if cluster_file.exists():
        cluster = config_mod.load(cluster_file)
        return Target(data_dir, cluster.certs_path, tuple(cluster.cert_name(n.name) for n in cluster.nodes),
                      cluster.insecure)
    if regions_mod.is_global(data_dir):
        global_cfg = regions_mod.load(data_dir)
        clusters = [region.cluster() for region in global_cfg.regions if region.cluster_file.exists()]
        # Every region's file names the one shared directory; before the first start, its default.
        certs_dir = clusters[0].certs_path if clusters else certs_mod.default_dir(data_dir)
        names = tuple(cluster.cert_name(node.name) for cluster in clusters for node in cluster.nodes)
        return Target(data_dir, certs_dir, names, any(cluster.insecure for cluster in clusters))
    raise CertsCliError(f"{data_dir} holds no {config_mod.CONFIG_FILE} or {regions_mod.GLOBAL_FILE}: "
                        "not a cluster's data directory (start one with `quorumdb up --data-dir DIR`)")


def kind_of(name: str) -> str:
    if name == "ca":
        return "ca"
    return "admin" if name == certs_mod.ADMIN else "node"


def _no_ca(target: Target) -> CertsCliError:
    if target.insecure:
        return CertsCliError(f"the cluster in {target.data_dir} runs --insecure (insecure = true in its cluster "
                             f"file): plaintext, no CA and no certificates")
    return CertsCliError(f"no cluster CA in {target.certs_dir}: `quorumdb up --data-dir {target.data_dir}` "
                         "creates it and every node's certificate on its first start")


def _utc_text(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def cert_json(info: certs_mod.CertInfo, now: datetime.datetime) -> dict:
    return {"name": info.name, "kind": kind_of(info.name), "not_before": _utc_text(info.not_before),
            "not_after": _utc_text(info.not_after), "days_left": round(info.days_left(now), 1),
            "fingerprint_sha256": info.fingerprint, "hosts": list(info.hosts), "serial": f"{info.serial:x}",
            "cluster_id": info.cluster_id, "path": str(info.path)}


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n" for row in rows)


def command_list(target: Target, as_json: bool, now: datetime.datetime, out: TextIO) -> int:
    try:
        found = certs_mod.list_certs(target.certs_dir)
    except certs_mod.CertError:
        raise _no_ca(target) from None
    if as_json:
        out.write(json.dumps([cert_json(info, now) for info in found], indent=2) + "\n")
        return EXIT_OK
    rows = [["NAME", "KIND", "NOT AFTER (UTC)", "DAYS LEFT", "SHA-256", "HOSTS"]]
    for info in found:
        days = info.days_left(now)
        rows.append([info.name, kind_of(info.name), _utc_text(info.not_after),
                     f"{days:.0f}" if days >= 0 else "EXPIRED",
                     info.fingerprint[:SHORT_FINGERPRINT_CHARS] + "...", ",".join(info.hosts)])
    out.write(f"certificates in {target.certs_dir} (cluster CA {found[0].cluster_id})\n")
    out.write(table(rows))
    missing = sorted(set(target.nodes) - {info.name for info in found})
    if missing:
        out.write(f"no certificate yet for: {', '.join(missing)} (`quorumdb up` issues them when it starts)\n")
    if target.insecure:
        out.write("note: the cluster runs --insecure: these certificates are not used\n")
    return EXIT_OK


def rotate_one(target: Target, name: str, now: datetime.datetime, out: TextIO) -> None:
    cert_path, _ = certs_mod.pair_paths(target.certs_dir, name)
    try:
        old = certs_mod.info_of(cert_path)
    except FileNotFoundError:
        raise CertsCliError(f"no certificate for {name} in {target.certs_dir} yet (`quorumdb up` issues it)") from None
    new = certs_mod.rotate(target.certs_dir, name, now=now)
    out.write(f"rotated {name}\n"
              f"  old: sha256 {old.fingerprint}  expires {_utc_text(old.not_after)}\n"
              f"  new: sha256 {new.fingerprint}  expires {_utc_text(new.not_after)}\n")


def command_rotate(target: Target, node: str | None, every: bool, now: datetime.datetime, out: TextIO) -> int:
    if every == (node is not None):
        raise CertsCliError("rotate takes a NODE or --all (not both)", EXIT_USAGE)
    if not certs_mod.ca_path(target.certs_dir).exists():
        raise _no_ca(target)
    names = list(target.nodes) if every else [node]
    known = [*target.nodes, certs_mod.ADMIN]
    for name in names:
        if name not in known:
            raise CertsCliError(f"no node {name!r} in {target.data_dir}; the names are: {', '.join(known)}",
                                EXIT_USAGE)
    for name in names:
        rotate_one(target, name, now, out)
    out.write(f"{'every node' if every else names[0]} uses the new certificate for its next connections "
              "(each new TLS handshake reads it): no restart needed. Connections already open keep the old "
              "certificate, valid until it expires.\n")
    return EXIT_OK


def command_init(cluster_file: str | None, certs_dir: str | None, out: TextIO) -> int:
    """The CA, the admin certificate and one per node of the cluster file; existing ones are kept."""
    if not cluster_file:
        raise CertsCliError("init needs --cluster FILE", EXIT_USAGE)
    cluster = config_mod.load(cluster_file)
    target = pathlib.Path(certs_dir).resolve() if certs_dir else cluster.certs_path
    # Each node's certificate names it as its peers and the host dial it: its name, its host
    # from the cluster file (a compose service name), localhost and 127.0.0.1.
    created = certs_mod.ensure(target, [(cluster.cert_name(node.name), certs_mod.default_hosts(node.name, node.host))
                                        for node in cluster.nodes])
    kept = len(cluster.nodes) + 2 - len(created)
    out.write(f"{target}: created {', '.join(created) if created else 'nothing'}"
              f"{f' (kept {kept} existing)' if kept else ''}\n")
    return EXIT_OK


def command(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None,
            now: datetime.datetime | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    now = now or datetime.datetime.now(datetime.timezone.utc)
    try:
        if args.certs_action == "init":
            return command_init(args.cluster, args.certs_dir, out)
        target = resolve(args.data_dir)
        if args.certs_action == "rotate":
            return command_rotate(target, args.node, args.all, now, out)
        if args.node is not None or args.all:
            raise CertsCliError(f"`certs list` takes no NODE or --all (usage: {USAGE})", EXIT_USAGE)
        return command_list(target, args.json, now, out)
    except CertsCliError as error:
        err.write(f"quorumdb certs: {error.message}\n")
        return error.code
    except (certs_mod.CertError, ValueError, OSError) as error:
        err.write(f"quorumdb certs: {error}\n")
        return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.certs_cli ...`: the same as `quorumdb certs ...`, importing only the
    certificate code (scripts/compose-certs runs it on a host without gRPC)."""
    parser = argparse.ArgumentParser(prog="python -m tools.certs_cli", usage=USAGE, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, "quorumdb-data")
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
