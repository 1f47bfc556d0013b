"""One exception type for every user-facing error; the CLI prints it as one line and exits 2."""


class EdgekdError(Exception):
    """A problem with the user's input (file, key, layer, ...) and what to do about it.

    The message must be one line, name the offending file/key/layer and say what to do.
    """
