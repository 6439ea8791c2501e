"""Model backends (one request at a time, asynchronously): the Backend seam and its registry,
the deterministic and external (OpenAI-compatible) backends, bundled model directories and
forced tool calls by structured output.
"""
