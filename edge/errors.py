"""Errors printed as one line, never as a traceback, with the exit status systemd needs.

Exit status 2 tells systemd not to restart (the unit's ``RestartPreventExitStatus=2``):
only a configuration or an input a person must fix may end that way. Anything that can
appear while the appliance runs unattended (a disk, a mount, a lock, a damaged state
file) must end in status 1, so that systemd starts the service again.
"""


class UserError(Exception):
    """A mistake in input, arguments or configuration.

    The message must name the file or field at fault; the CLI prints it on one line
    (``crystal-edge: error: <message>``) and exits with :attr:`exit_code` (2).
    """

    exit_code = 2


class TransientError(UserError):
    """A fault of the machine rather than of the configuration: a state directory that
    cannot be written now, a database another process holds, a failing disk.

    Printed on one line like a :class:`UserError` (every handler of those applies), but
    the CLI exits with status 1, so systemd restarts the service.
    """

    exit_code = 1
