"""The one exception type users see: a mistake in their input, with the fix in the message."""

__all__ = ["WorkbenchError", "app_message"]


class WorkbenchError(Exception):
    """A problem with the user's input or project that they can fix.

    The command line prints the message as one line (no traceback) and exits
    with a non-zero code; widgets show it as a readable message. Messages name
    what was wrong, what arrived and what is expected, and how to fix it.

    Parameters
    ----------
    message : str
        What the command line prints (its fix may name a `workbench` command).
    in_app : str, optional
        The same in the app's words, when the fix differs there (what to click, not a command to
        run); `app_message` picks it.

    Examples
    --------
    >>> error = WorkbenchError("nothing is annotated yet; import labels with `workbench labels`",
    ...                        in_app="nothing is annotated yet; paint some in step 2 (Annotate)")
    >>> str(error), app_message(error)
    ('nothing is annotated yet; import labels with `workbench labels`', 'nothing is annotated yet; paint some in step 2 (Annotate)')
    """

    def __init__(self, *args, in_app: str | None = None):
        super().__init__(*args)
        self.in_app = in_app


def app_message(exc: BaseException) -> str:
    """What the app shows for `exc`: a `WorkbenchError`'s ``in_app`` text when it has one, else its message."""
    in_app = getattr(exc, "in_app", None)
    return str(in_app) if in_app else str(exc)
