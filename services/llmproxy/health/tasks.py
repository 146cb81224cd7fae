"""Background loops that stop when cancelled, even if a library swallowed the cancellation.

redis-py can turn a cancellation in the middle of a command into a connection error, which the
store's fallback then absorbs: the loop would carry on with its task marked as cancelling, and
a shutdown waiting for it would wait forever. Each loop calls this between steps.
"""

from __future__ import annotations

import asyncio


def stop_if_cancelled() -> None:
    """Raise CancelledError if the current task was asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
