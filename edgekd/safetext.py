"""Text from files, devices and converters made safe to print.

A node name, an op name, a device name or an error text read from a file may hold terminal escape
sequences (``\\x1b[2J`` clears the screen, ``\\x1b]0;...`` retitles the window) or rich markup (``[/]``
stops rich with a MarkupError). :func:`plain` shows control characters as visible ``\\xNN`` escapes (line
breaks and tabs become spaces, so a message stays one line); :func:`markup` is :func:`plain` escaped for
rich, for every file-derived string that rich prints (``console.print``, table cells).
"""

from __future__ import annotations

# Bidirectional overrides reorder what the terminal shows (Trojan Source); shown escaped like controls.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")
_SPACE = frozenset("\t\n\r\x0b\x0c")


def _visible(ch: str) -> str:
    if ch in _SPACE:
        return " "
    code = ord(ch)
    if code < 32 or 127 <= code < 160:
        return f"\\x{code:02x}"
    if ch in _BIDI:
        return f"\\u{code:04x}"
    return ch


def plain(text: object) -> str:
    """``str(text)`` on one line with every control character shown as a visible escape."""
    s = str(text)
    if s.isprintable():  # the common case: nothing to do
        return s
    return "".join(_visible(c) for c in s)


def markup(text: object) -> str:
    """:func:`plain` escaped for rich markup: ``[/]`` prints as ``[/]`` instead of raising."""
    from rich.markup import escape

    return escape(plain(text))


__all__ = ["markup", "plain"]
