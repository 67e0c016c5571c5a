"""The one exception type users see: a mistake in their input, with the fix in the message."""


class WorkbenchError(Exception):
    """A problem with the user's input or project that they can fix.

    The command line prints the message as one line (no traceback) and exits
    with a non-zero code; widgets show it as a readable message. Messages name
    what was wrong, what arrived and what is expected, and how to fix it.
    """
