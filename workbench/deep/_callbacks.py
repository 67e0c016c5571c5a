"""Training callbacks: one small hook set drives the CLI bar, live plots and tests.

A callback subclasses `Callback` and overrides only the hooks it needs. The
trainer calls them through a `CallbackList`, so widgets, the command line and
tests observe training without the trainer knowing about any of them.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["Callback", "CallbackList", "HistoryCallback", "TqdmProgress", "ProgressFunctionCallback"]


class Callback:
    """No-op base class for training observers.

    ``logs`` passed to `on_epoch_end` hold ``"loss"``, ``"val_loss"`` (None
    when no pixels could be held out), ``"seconds"`` (since training started),
    ``"epoch"``, ``"lr"`` and ``"pixels_per_second"``.
    """

    def on_train_start(self, info: dict[str, Any]) -> None:
        """Training is about to start; ``info`` describes model, data and settings."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        """An epoch finished (``epoch`` counts from 1)."""

    def on_progress(self, fraction: float, message: str) -> None:
        """Overall progress in [0, 1] with a short human-readable message."""

    def on_train_end(self, result: Any) -> None:
        """Training finished (normally or by a stop request) with ``result``."""

    def on_exception(self, exc: BaseException) -> None:
        """Training failed with ``exc``; it is re-raised after the callbacks ran."""


class CallbackList(Callback):
    """Dispatch every hook to a sequence of callbacks, in order.

    Parameters
    ----------
    callbacks : iterable of Callback
        The observers; ``None`` entries are skipped.

    Raises
    ------
    TypeError
        If an entry is not a `Callback`.
    """

    def __init__(self, callbacks: Iterable[Callback] = ()):
        self.callbacks: list[Callback] = []
        for callback in callbacks or ():
            if callback is None:
                continue
            if not isinstance(callback, Callback):
                raise TypeError(
                    f"`callbacks` must hold workbench.deep.Callback instances; got "
                    f"{type(callback).__name__}. Subclass Callback and override the hooks you need."
                )
            self.callbacks.append(callback)

    def on_train_start(self, info):
        for callback in self.callbacks:
            callback.on_train_start(info)

    def on_epoch_end(self, epoch, logs):
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, dict(logs))

    def on_progress(self, fraction, message):
        for callback in self.callbacks:
            callback.on_progress(fraction, message)

    def on_train_end(self, result):
        for callback in self.callbacks:
            callback.on_train_end(result)

    def on_exception(self, exc):
        for callback in self.callbacks:
            callback.on_exception(exc)


class HistoryCallback(Callback):
    """Record what training reported, for plots and tests.

    Attributes
    ----------
    info : dict or None
        What `on_train_start` received.
    epochs : list of dict
        One ``logs`` dict per finished epoch.
    progress : list of (float, str)
        Every progress report.
    result : object or None
        What `on_train_end` received.
    exception : BaseException or None
        What `on_exception` received.
    """

    def __init__(self):
        self.info = None
        self.epochs: list[dict[str, Any]] = []
        self.progress: list[tuple[float, str]] = []
        self.result = None
        self.exception = None

    def on_train_start(self, info):
        self.info = dict(info)

    def on_epoch_end(self, epoch, logs):
        self.epochs.append(dict(logs))

    def on_progress(self, fraction, message):
        self.progress.append((float(fraction), str(message)))

    def on_train_end(self, result):
        self.result = result

    def on_exception(self, exc):
        self.exception = exc

    def series(self, key: str) -> list[Any]:
        """The values of one log key over epochs, e.g. ``history.series("loss")``."""
        return [logs.get(key) for logs in self.epochs]


class ProgressFunctionCallback(Callback):
    """Adapt a plain ``progress(fraction, message)`` callable to the callback protocol."""

    def __init__(self, progress):
        if not callable(progress):
            raise TypeError(f"`progress` must be callable(fraction, message); got {type(progress).__name__}.")
        self._progress = progress

    def on_progress(self, fraction, message):
        self._progress(fraction, message)


class TqdmProgress(Callback):
    """A tqdm progress bar for the command line, showing losses after each epoch.

    Parameters
    ----------
    **tqdm_kwargs
        Passed to ``tqdm.tqdm`` (e.g. ``file=sys.stderr``, ``disable=True``).

    The bar is `workbench.progress.ProgressBar`, the one the command line's prediction draws.
    """

    def __init__(self, **tqdm_kwargs):
        self._tqdm_kwargs = {"desc": "training", **tqdm_kwargs}
        self._bar = None

    def on_train_start(self, info):
        from workbench.progress import ProgressBar

        self._bar = ProgressBar(**self._tqdm_kwargs)

    def on_progress(self, fraction, message):
        if self._bar is not None and fraction >= self._bar.fraction:
            self._bar(fraction)

    def on_epoch_end(self, epoch, logs):
        if self._bar is None:
            return
        postfix = {"epoch": epoch, "loss": f"{logs['loss']:.4f}"}
        if logs.get("val_loss") is not None:
            postfix["val"] = f"{logs['val_loss']:.4f}"
        self._bar.set_postfix(postfix)

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_train_end(self, result):
        self.on_progress(1.0, "done")
        self._close()

    def on_exception(self, exc):
        self._close()
