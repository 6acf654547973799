"""Differential testing of QuorumDB's SQL against a real PostgreSQL server (see runner.py)."""
