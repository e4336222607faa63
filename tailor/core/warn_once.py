"""Repeated warnings print once, with a count at the end (``tailor.*`` loggers).

:func:`install` adds a :class:`OnceFilter` to the ``tailor`` logger's handlers' path: a warning whose text was
already shown is dropped and counted, as is any record logged with ``extra={"once": True}`` whose message template
was shown (the long-caption warning: one line per batch otherwise, each with another example). :func:`report`
prints ``"<first text>" repeated N more times`` for each, once, at the end of a command.
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("tailor")


class OnceFilter(logging.Filter):
    def __init__(self):
        super().__init__()
        self.seen: dict[tuple, str] = {}
        self.repeats: Counter = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, "summary", False):
            return True
        key = ("template", record.msg) if getattr(record, "once", False) else ("text", record.getMessage())
        if key in self.seen:
            self.repeats[key] += 1
            return False
        self.seen[key] = record.getMessage()
        return True


_filter: OnceFilter | None = None


def install() -> OnceFilter:
    """Attach the filter to the ``tailor`` logger (once), with nothing seen yet: each command starts afresh."""
    global _filter
    if _filter is None:
        _filter = OnceFilter()
        log.addFilter(_filter)
    _filter.seen.clear()
    _filter.repeats.clear()
    return _filter


def report() -> None:
    """Log one line per repeated warning (then forget the counts)."""
    if _filter is None:
        return
    for key, n in _filter.repeats.items():
        first = _filter.seen[key]
        log.warning(
            "the warning %r repeated %d more time%s", first[:100], n, "" if n == 1 else "s", extra={"summary": True}
        )
    _filter.repeats.clear()
