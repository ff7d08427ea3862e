"""Where the fit computes: the ``device`` argument of :func:`bayes_crl.infer.fit_svi` and the estimator.

The SVI steps, the encoder passes over the data (search rows, ``transform``, the posterior summary) and the
Pyro model and guide run on the device; the data stay where they are (CPU memory, or a file read on demand,
:mod:`bayes_crl.rows`) and move to the device one minibatch or chunk at a time. The stages that work on a
bounded set of latents (sparse unmixing, order search, parent-set posteriors) are numpy code on the CPU. A fit's
result (:class:`bayes_crl.fit_result.FitResult`) holds its modules on the CPU, so saving, loading and the
posterior code behave the same whatever device fitted it.
"""
from __future__ import annotations

import copy

import torch

from bayes_crl._validation import BayesCRLValueError

__all__ = ["resolve_device", "on_device", "module_device"]

CPU = torch.device("cpu")


def resolve_device(device, name: str = "device", owner: str | None = None) -> torch.device:
    """The ``torch.device`` that ``device`` names.

    Parameters
    ----------
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, a ``torch.device``, or ``"auto"`` (the current CUDA device where one
        is available, else the CPU).
    name, owner : str
        The argument's name and owner, for the error message.

    Raises
    ------
    BayesCRLValueError
        ``device`` is not a device name, names a device type other than CPU and CUDA, or names a CUDA device
        that this machine does not have (no CUDA build of torch, no GPU, or an index beyond the GPUs present).
    """
    where = f"The '{name}' parameter" + (f" of {owner}" if owner else "")
    if isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, (str, torch.device)):
        raise BayesCRLValueError(f"{where} must be 'cpu', 'cuda', 'cuda:N', 'auto' or a torch.device. "
                                 f"Got {device!r} instead.")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise BayesCRLValueError(f"{where} must be 'cpu', 'cuda', 'cuda:N', 'auto' or a torch.device. "
                                 f"Got {device!r} instead.") from None
    if dev.type == "cpu":
        return CPU
    if dev.type != "cuda":
        raise BayesCRLValueError(f"{where} must name a CPU or a CUDA device. Got {device!r} (type {dev.type!r}).")
    if not torch.cuda.is_available():
        raise BayesCRLValueError(f"{where} is {device!r}, but CUDA is not available here (torch "
                                 f"{torch.__version__}, CUDA build: {torch.version.cuda is not None}). Use "
                                 "device='cpu', or device='auto' to take a GPU only where there is one.")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise BayesCRLValueError(f"{where} is {device!r}, but this machine has {torch.cuda.device_count()} CUDA "
                                 "device(s).")
    # with its index, so that it compares equal to the device of tensors placed on it
    return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (CPU for a module without parameters)."""
    p = next(module.parameters(), None)
    return CPU if p is None else p.device


def on_device(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` itself when it is already on ``device``, else a copy of it there (the original is left on its
    device: fitted results keep their modules on the CPU)."""
    if module_device(module) == device:
        return module
    return copy.deepcopy(module).to(device)
