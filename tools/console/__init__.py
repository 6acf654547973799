"""The web console `quorumdb up` serves: see tools/console/server.py."""
