"""The command-line tools and their helpers, apart from the library they use.

`cli.py` is the `quorumdb` command (up, status, chaos, bench, token, backup, restore, clone,
backtrack, global, sim, top, console ...), `qsql.py` the psql-like shell and `format.py` its
printer. `launcher.py` starts a cluster's processes, `node.py` is the entry point of one node
process (it picks the role), `supervisor.py` serves chaos actions for `quorumdb up`.
`tools/bench/` holds `quorumdb bench` and the comparison benchmarks (`tools/bench/compare`,
`tools/bench/ab_versions`, ...), `jepsen/` the Jepsen-style checker, `sim/` the deterministic
simulation, `dr/` backup, restore, clone and backtrack, `console/` the web console.

Tools may import anything; nothing below them (quorumdb/, the node roles) imports a tool
(tests/test_layers.py checks it).
"""
