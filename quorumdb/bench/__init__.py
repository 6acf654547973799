"""`quorumdb bench`: workloads, runner and latency statistics (issue 7; docs/BENCHMARKS.md)."""
