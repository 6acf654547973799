"""The web console `quorumdb up` serves: see quorumdb/console/server.py."""
