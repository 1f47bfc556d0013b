"""Where progress goes: rich's live display on a terminal, plain flushed lines anywhere else.

A run logged to a file (``edgekd distill r.yaml > log``, a CI job, ``nohup``) sees no live display: rich
draws nothing there until it stops, and a transient bar never. :func:`is_terminal` is the one test the
training loop, export and bench use to choose; :func:`plain_line` and :func:`count_lines` write the lines.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def is_terminal(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default ``sys.stdout``) is a terminal and rich agrees (``TTY_COMPATIBLE=0``,
    Jupyter or IDLE say not); ``FORCE_COLOR`` alone does not make a log file a terminal."""
    from rich.console import Console

    stream = sys.stdout if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed (end of a pytest run)
        return False
    return tty and Console(file=stream).is_terminal


def plain_line(text: str, stream: TextIO | None = None) -> None:
    """``text`` as one line on ``stream`` (default ``sys.stdout``), flushed at once."""
    print(text, file=sys.stdout if stream is None else stream, flush=True)


def count_lines(
    label: str, total: int, stream: TextIO | None = None, parts: int = 10
) -> Callable[[int], None]:
    """A ``progress(done)`` callback that writes ``"<label> <done>/<total> (<s> s)"`` each time another
    ``1/parts`` of ``total`` is done, and at the end (at most ``parts`` lines)."""
    t0 = time.perf_counter()
    step = max(1, -(-total // parts))  # ceil
    shown = 0

    def report(done: int) -> None:
        nonlocal shown
        if done >= total or done - shown >= step:
            shown = done
            plain_line(f"{label} {done}/{total} ({time.perf_counter() - t0:.1f} s)", stream)

    return report
