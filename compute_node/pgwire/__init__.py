"""PostgreSQL v3 wire protocol endpoint of a compute node.

protocol.py (framing, decoding, encoding; pure) -> extended.py (prepared statements and
portals; pure) -> pgtypes.py (types, parameter literals; pure) and quorumdb/sqllex.py (the
project's one SQL lexer: statement splitting, $n) ->
scram.py + quorumdb/tokens.py (authentication; pure) -> admission.py (connection limits;
pure) -> settings.py + bridge.py (SET/SHOW, catalog answers, the engine Session) ->
server.py (asyncio streams shell). See docs/POSTGRES.md.
"""
