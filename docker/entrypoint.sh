#!/bin/sh
# Entrypoint of a QuorumDB container: runs the node named by $QUORUMDB_NODE.
#
#   QUORUMDB_NODE     the node's name in the cluster file (journal-az1, storage-az2-b, ...)
#   QUORUMDB_CONFIG   the cluster file (default /etc/quorumdb/cluster.toml, read-only)
#   QUORUMDB_DATA     the node's data directory, a named volume (default /data)
#   QUORUMDB_CROSS_AZ_DELAY_MS  simulated one-way latency between AZs (quorumdb/rpc.py)
#
# A compute node also needs the cluster's token secret (PostgreSQL passwords, quorumdb/tokens.py):
# all compute containers mount one shared volume at /secret; the first to start creates the
# secret there (atomically), and each links it into its data directory, where the node looks.
# TLS: the node's certificate, the CA's certificate (and the admin certificate for the health
# check) come from the host, mounted read-only at the cluster file's certs_dir; without them the
# container stops at once saying how to make them, rather than serving without TLS.
# Any arguments are passed on to `python3 -m tools.node` (for example --log-level DEBUG).
set -eu
: "${QUORUMDB_NODE:?set QUORUMDB_NODE to the name of the node this container runs}"
CONFIG=${QUORUMDB_CONFIG:-/etc/quorumdb/cluster.toml}
DATA=${QUORUMDB_DATA:-/data}
mkdir -p "$DATA"
case "$QUORUMDB_NODE" in
    compute-*)
        if [ -d /secret ]; then
            python3 -c 'import sys; from quorumdb import tokens; tokens.load_or_create_secret(sys.argv[1])' /secret
            ln -sfn /secret/token_secret "$DATA/token_secret"
        fi
        ;;
esac
python3 - "$CONFIG" "$QUORUMDB_NODE" <<'PY'
import sys
from quorumdb import certs, config
cluster = config.load(sys.argv[1])
if not cluster.insecure:
    cert, key = certs.pair_paths(cluster.certs_path, cluster.cert_name(sys.argv[2]))
    missing = [str(path) for path in (certs.ca_path(cluster.certs_path), cert, key) if not path.exists()]
    if missing:
        sys.exit(f"quorumdb-entrypoint: missing {', '.join(missing)}: make the certificates on the host with "
                 "scripts/compose-certs before `docker compose up` (docker-compose.yml mounts them)")
PY
exec python3 -m tools.node --config "$CONFIG" --name "$QUORUMDB_NODE" --data-dir "$DATA" "$@"
