"""Storage-layer recovery tools: restore, clone, backtrack, snapshots and backup status (docs/DR.md).

The work itself happens in the cluster (storage copies upload their own backup; a backtrack is
a journal entry that storage applies); these modules are the commands that start it, read the
object store, and lay out the data directory of a new cluster.
"""
