"""Bounds and defaults of the deterministic simulation, each with why it has its value.

Kept apart from quorumdb/limits.py (which belongs to the database) and light to import: the
command-line parser reads them without loading the simulation.
"""

WORKLOADS = ("append", "bank")
# Simulated seconds of workload per seed: long enough for a few nemesis actions (one every
# NEMESIS_MEAN_GAP_S on average) and a few dozen transactions per client.
DEFAULT_DURATION_S = 4.0
# Client sessions per run: enough for write-write conflicts and real-time edges between clients.
CLIENTS = 3
# Virtual seconds the workload's tables get to be created (no faults yet) before the run fails.
SETUP_TIMEOUT_S = 60.0
# After every fault healed and every node restarted: how long the final read is retried.
FINAL_READ_TIMEOUT_S = 60.0
# A client's statement deadline: a failover (about 1 s) fits in it; a stuck client ends soon.
CLIENT_TIMEOUT_S = 5.0
# Mean virtual seconds between two nemesis actions.
NEMESIS_MEAN_GAP_S = 0.7
# Seeds one command may run, and the longest workload per seed (typos, not limits of the design).
SEEDS_MAX = 1_000_000
DURATION_MAX_S = 3_600.0
