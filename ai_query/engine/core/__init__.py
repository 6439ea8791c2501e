"""The engine's core: the Engine protocol, the Arrow wire format of request and result batches,
SQL types as Arrow types, the memo of recent answers and the one background asyncio loop.
"""
