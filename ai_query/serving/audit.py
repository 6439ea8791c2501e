"""The audit log: one JSON line per management change, on logger ``ai_query.audit``.

Every create, config update, rate-limit or tag change, permission change and delete is logged
with the principal, the action, the endpoint and the outcome (``success``, ``denied`` or
``failed``, with the HTTP status), whether it was allowed or not. The server's JSON log
handler (:func:`ai_query.serving.logs.configure_logging`) writes the lines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ai_query.errors import PermissionDeniedError

audit_log = logging.getLogger("ai_query.audit")


@dataclass
class AuditEntry:
    """What an audited block is about; the block may name the endpoint once it knows it."""

    endpoint: str | None
    """The endpoint's name (or the id the request gave), None when the request named none."""


@contextmanager
def audited(principal: str, action: str, endpoint: str | None) -> Iterator[AuditEntry]:
    """Log the outcome of the management change run in the ``with`` block.

    Args:
        principal: who asked.
        action: what (``create``, ``update_config``, ``set_permissions``, ...).
        endpoint: the endpoint's name, or None when the request named none.
    """
    entry = AuditEntry(endpoint)
    try:
        yield entry
    except BaseException as exc:
        status = getattr(exc, "status", None)
        if isinstance(exc, PermissionDeniedError):
            status = 403
        outcome = "denied" if status in (401, 403) else "failed"
        status = status if isinstance(status, int) else 500
        _log(principal, action, entry.endpoint, outcome, status)
        raise
    _log(principal, action, entry.endpoint, "success", 200)


def _log(principal: str, action: str, endpoint: str | None, outcome: str, status: int) -> None:
    audit_log.info(
        "%s %s on endpoint %s: %s",
        principal,
        action,
        endpoint,
        outcome,
        extra={
            "principal": principal,
            "action": action,
            "endpoint": endpoint,
            "outcome": outcome,
            "status": status,
        },
    )
