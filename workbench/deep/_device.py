"""Where deep-learning work runs: CUDA, then Apple MPS, else the CPU with all its cores."""

from __future__ import annotations

import os

import torch

from workbench.errors import WorkbenchError

__all__ = ["pick_device", "configure_cpu_threads", "available_devices"]


def available_devices() -> list[str]:
    """Names of the torch devices usable on this machine, best first.

    Returns
    -------
    list of str
        A subset of ``["cuda", "mps", "cpu"]``; ``"cpu"`` is always present.
    """
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """The device to train or predict on.

    Parameters
    ----------
    requested : str, torch.device or None
        ``None`` or ``"auto"`` picks CUDA when present, then MPS, else CPU.
        An explicit name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is
        checked for availability.

    Returns
    -------
    torch.device

    Raises
    ------
    WorkbenchError
        If the requested device is not available here.

    Examples
    --------
    >>> pick_device("cpu")
    device(type='cpu')
    """
    if requested is None or (isinstance(requested, str) and requested.strip().lower() == "auto"):
        return torch.device(available_devices()[0])
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as exc:
        raise WorkbenchError(
            f"`device` must name a torch device such as 'auto', 'cpu', 'cuda' or 'mps'; got {requested!r}."
        ) from exc
    if device.type not in available_devices():
        raise WorkbenchError(
            f"`device` {str(device)!r} is not available on this machine; available: "
            f"{available_devices()}. Use device='auto' to pick the best one."
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise WorkbenchError(
            f"`device` {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)."
        )
    return device


def configure_cpu_threads(n_threads: int | None = None) -> int:
    """Let torch use every CPU core for intra-op parallelism.

    Torch's default can be lower than the core count inside containers and
    notebooks; convolutions on small CPUs scale almost linearly with threads.

    Parameters
    ----------
    n_threads : int or None
        Threads to use; ``None`` means the ``WORKBENCH_THREADS`` environment variable when set
        (for machines shared with other heavy work, where oversubscribed threads slow torch
        down many times over), else the cores this process may run on.

    Returns
    -------
    int
        The thread count now in effect.
    """
    if n_threads is None:
        from workbench import config

        n_threads = config.threads()
        if n_threads is None:
            n_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not isinstance(n_threads, int) or n_threads < 1:
        raise WorkbenchError(f"`n_threads` must be a positive integer or None; got {n_threads!r}.")
    if torch.get_num_threads() != n_threads:
        torch.set_num_threads(n_threads)
    return torch.get_num_threads()
