# The two commands a newcomer needs: `make up` runs QuorumDB, `make test` tests it. Both set up
# what they need first (scripts/setup: which Python, pip, Debian packages) and do nothing new when
# run again.
.DEFAULT_GOAL := help

# Options for `quorumdb up`, e.g. make up ARGS="--data-dir /tmp/qdb --base-port 7200"
ARGS ?=
# Options and paths for pytest, e.g. make test PYTEST_ARGS="tests/test_sql.py -x"
PYTEST_ARGS ?=

SETUP := bash scripts/setup

.PHONY: help up test setup setup-test

help:
	@echo "make up      install QuorumDB and start the 15-node cluster in the foreground (data in ./quorumdb-data; Ctrl-C stops it; ARGS=\"...\" for quorumdb up)"
	@echo "make test    install QuorumDB, its test tools and Debian's PostgreSQL, Prometheus, Chromium, tmux, HAProxy, then run the whole default suite (PYTEST_ARGS=\"...\" for pytest)"
	@echo "make setup   only the setup of make up;  make setup-test: only the setup of make test"
	@echo "make help    this list"

up:
	@$(SETUP) run -- quorumdb up $(ARGS)

test:
	@$(SETUP) test -- python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

setup:
	@$(SETUP) run

setup-test:
	@$(SETUP) test
