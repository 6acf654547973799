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
exec python3 -m tools.node --config "$CONFIG" --name "$QUORUMDB_NODE" --data-dir "$DATA" "$@"
