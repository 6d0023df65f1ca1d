"""A traceback's text as `traceback.format_exception` writes it, frames formatted once.

Formatting the frames is most of what sending an exception costs
(`grpyc.vinegar`): Python 3.11 compiles each frame's source line to place
the ``^~~`` markers under it, ~10 us a frame, and a request that fails
again fails through the same frames. A frame's lines depend only on the
fields of its `traceback.FrameSummary` (file, name, line numbers, columns,
source line) and on the options of the formatting, so they are kept under
those: the text is the same character for character.
"""

from __future__ import annotations

import traceback
import types
from typing import Any

__all__ = ["format_exception"]

# Distinct frames kept; past this the cache starts over (a bound on memory
# for programs whose failures go through ever new lines, such as generated code).
CACHE_LIMIT = 1024

# Frames whose source line is longer are formatted each time: with the
# limit above, the cache holds at most ~3 MiB (lines appear in key and value).
LONGEST_CACHED_LINE = 1_000

_frame_lines: dict[tuple[Any, ...], str] = {}


class _CachedFrames(traceback.StackSummary):
    """A stack whose frames' lines come from the cache when it has them."""

    def format_frame_summary(self, frame_summary: traceback.FrameSummary, **options: Any) -> str:
        line = frame_summary.line
        if frame_summary.locals is not None or (line and len(line) > LONGEST_CACHED_LINE):
            return super().format_frame_summary(frame_summary, **options)  # each time
        key = (
            frame_summary.filename,
            frame_summary.name,
            frame_summary.lineno,
            frame_summary.end_lineno,
            frame_summary.colno,
            frame_summary.end_colno,
            line,
            *sorted(options.items()),
        )
        lines = _frame_lines.get(key)
        if lines is None:
            lines = super().format_frame_summary(frame_summary, **options)
            if len(_frame_lines) >= CACHE_LIMIT:
                _frame_lines.clear()
            _frame_lines[key] = lines
        return lines


def format_exception(value: BaseException, tb: types.TracebackType | None) -> list[str]:
    """``traceback.format_exception(type(value), value, tb)``, the same lines."""
    report = traceback.TracebackException(type(value), value, tb, compact=True)
    _format_frames_through_cache(report)
    return list(report.format())


def _format_frames_through_cache(report: traceback.TracebackException) -> None:
    """Give `report` and the reports chained to it (causes, contexts, the
    exceptions of a group) stacks that format their frames through the cache."""
    pending = [report]
    seen: set[int] = set()
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        item.stack = _CachedFrames(item.stack)
        pending.extend(chained for chained in (item.__cause__, item.__context__) if chained)
        pending.extend(getattr(item, "exceptions", None) or ())
