"""Errors that are the user's to fix: printed as one line, never as a traceback."""


class UserError(Exception):
    """A mistake in input, arguments or configuration.

    The message must name the file or field at fault; the CLI prints it on one line
    (``crystal-edge: error: <message>``) and exits with status 2.
    """
