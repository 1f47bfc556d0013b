"""One exception type for every user-facing error; the CLI prints it as one line and exits 2."""


class EdgekdError(Exception):
    """A problem with the user's input (file, key, layer, ...) and what to do about it.

    The message must be one line, name the offending file/key/layer and say what to do.
    """


# What the CLI says when the user presses Ctrl-C; each command sets what it keeps on an interruption.
_interrupt_message = "interrupted; nothing was changed"


def set_interrupt_message(message: str) -> None:
    """Set the one line printed if the running command is interrupted (Ctrl-C)."""
    global _interrupt_message
    _interrupt_message = message


def interrupt_message() -> str:
    return _interrupt_message


def error_line(e: BaseException, limit: int = 300, *, with_type: bool = True) -> str:
    """One line saying what ``e`` is: its first line of text cut to ``limit`` characters, after its
    type name (``with_type``); the type name alone when it has no text. An :class:`EdgekdError` is
    already a line for the user and is returned as it is."""
    if isinstance(e, EdgekdError):
        return str(e)
    text = str(e).strip()
    first = text.splitlines()[0][:limit] if text else ""
    if not with_type:
        return first or type(e).__name__
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
