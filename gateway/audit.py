"""One audit line for every write and delete: who (the admitted caller), what, how many, and the
outcome. Lines go to the ``orbithash.audit`` logger as JSON, so they can be routed to their own
file or log store; they never hold a token, only the token's name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from orbithash_serving.access import current_principal
from orbithash_serving.errors import status_for

log = logging.getLogger("orbithash.audit")


class AuditRecord:
    """Counts filled in while the call runs; written once when it ends, whatever the outcome."""

    def __init__(self, action: str, **counts: int) -> None:
        self.action = action
        self.counts: dict[str, Any] = dict(counts)

    def note(self, **counts: Any) -> None:
        self.counts.update(counts)


@contextmanager
def audited(action: str, **counts: int) -> Iterator[AuditRecord]:
    record = AuditRecord(action, **counts)
    outcome = "OK"
    try:
        yield record
    except BaseException as exc:
        outcome = status_for(exc)[0].name
        raise
    finally:
        who = current_principal()
        line = {"audit": action, "who": who.name if who else "unknown", "role": who.role.label if who else None,
                "via": who.kind if who else None, "peer": who.peer if who else None, "outcome": outcome,
                **record.counts}
        log.info(json.dumps(line, sort_keys=False))
