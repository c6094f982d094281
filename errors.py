"""The errors a user can fix: each ends a command, or fails a start, with one line that says
what to do, never a traceback."""


class ModelError(Exception):
    """The model file cannot serve as a detector; the message says how to fix it."""


class EngineError(Exception):
    """The chosen backend cannot run here; the message says which one to use instead."""


class SourceError(Exception):
    """A source cannot be opened or read; the message says what to try."""


class ServerSetupError(Exception):
    """`serve` cannot start (a tool missing, a port taken); the message says what to do."""


USER_ERRORS = (ModelError, EngineError, SourceError, ServerSetupError)
