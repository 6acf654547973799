"""PostgreSQL v3 wire protocol endpoint of a compute node (issue 5).

protocol.py (framing, decoding, encoding; pure) -> extended.py (prepared statements and
portals; pure) -> pgtypes.py / sqltext.py (types, literals, statement splitting; pure) ->
scram.py + quorumdb/tokens.py (authentication; pure) -> admission.py (connection limits;
pure) -> settings.py + bridge.py (SET/SHOW, catalog answers, the engine Session) ->
server.py (asyncio streams shell). See docs/POSTGRES.md.
"""
