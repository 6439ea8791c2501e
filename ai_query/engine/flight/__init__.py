"""Engines over Arrow Flight: the client (the Engine protocol over servers), the server (any
Engine behind Flight) and what both agree on (the wire).
"""
