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
