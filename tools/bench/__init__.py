"""Benchmarks: `quorumdb bench` (workloads, runner, latency statistics) and the comparison
scripts run from the checkout (`tools/bench/compare`, `tools/bench/ab_versions`, `tools/bench/dr`, ...).
docs/BENCHMARKS.md records their figures and the commands to rerun them.
"""
