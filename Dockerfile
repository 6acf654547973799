# The QuorumDB image: one image for every node of the docker-compose cluster
# (docker-compose.yml picks the node with $QUORUMDB_NODE).
#
# The build needs no network: the project and its dependencies come in as wheels made on the
# host (`scripts/build-images` puts them in build/wheels/). BASE_IMAGE needs only a Python 3.11
# that runs manylinux wheels and has the venv module: python:3.11-slim, or the local Debian
# bookworm base that scripts/build-images makes with debootstrap when no registry is reachable
# (`docker build --build-arg BASE_IMAGE=quorumdb-base:bookworm .`).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/quorumdb \
    PATH=/opt/quorumdb/bin:$PATH

# A venv: Debian's own python3 is "externally managed" (PEP 668), python:3.11-slim's is not;
# a venv works on both. `python3`, not `python`: Debian has no `python` command.
COPY build/wheels/ /tmp/wheels/
RUN python3 -m venv /opt/quorumdb \
    && /opt/quorumdb/bin/pip install --no-index --find-links /tmp/wheels quorumdb \
    && rm -rf /tmp/wheels \
    && python3 -c "import tools.node, journal.main, adjudicator.main, storage_node.main, compute_node.main"

COPY docker/entrypoint.sh /usr/local/bin/quorumdb-entrypoint
RUN chmod 0755 /usr/local/bin/quorumdb-entrypoint && mkdir -p /data /secret /etc/quorumdb

# The default cluster file; docker-compose.yml mounts docker/cluster.toml over it.
COPY docker/cluster.toml /etc/quorumdb/cluster.toml
# No certificate or key is ever copied in (.dockerignore keeps them out of the build context):
# docker-compose.yml mounts the host's docker/certs at /etc/quorumdb/certs (scripts/compose-certs).

VOLUME ["/data"]
EXPOSE 7100-7102 7110-7112 7120-7122 7130-7135 5433-5435
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-m", "tools.healthcheck"]
ENTRYPOINT ["quorumdb-entrypoint"]
