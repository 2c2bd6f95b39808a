"""Tables of the sagas context (``sagas`` database)."""

from __future__ import annotations

from eventlog.models import Checkpoint


class SagasCheckpoint(Checkpoint):
    """Positions of this context's subscribers (choreography trace, handlers) in the log."""
