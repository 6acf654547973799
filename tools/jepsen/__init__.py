"""A seeded, Jepsen-style test harness for QuorumDB.

    python -m tools.jepsen --workload {bank,set,append} --seed N --duration S

runner.py    one run: fresh cluster, clients, nemesis, heal, final reads, check, summary
nemesis.py   the fault schedule (a pure function of the seed) and the thread that injects it
workloads.py bank, set and list-append clients over quorumdb.client
checker.py   pure checkers over a history (unit-tested with hand-made histories)
history.py   the JSON-lines history of operations and faults

See docs/TESTING.md.
"""
