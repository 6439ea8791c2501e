"""``python -m ai_query``: the ``ai-query`` command line (what the launcher of servers runs)."""

from __future__ import annotations

from ai_query.cli import main

if __name__ == "__main__":
    main()
