"""`quorumdb bench`: workloads, runner and latency statistics (docs/BENCHMARKS.md)."""
