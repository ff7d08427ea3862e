"""Training checkpoints: save and resume a fit loop exactly, without pickle.

A checkpoint is a directory holding ``manifest.json`` and one ``state-<sha>.safetensors`` file, written
with the bundle format of :mod:`bayes_crl.codec`. This module holds the three layers built on it:

* :func:`write_checkpoint` / :func:`read_checkpoint` write and verify one manifest + tensor file pair
  atomically; the manifest is replaced last, so it is the commit point and a crash leaves the previous
  checkpoint readable;
* :func:`rng_state_to_json` / :func:`rng_state_from_json` capture and restore RNG states (torch CPU,
  torch/numpy generators, numpy global and :mod:`random`), so a resumed fit draws what an uninterrupted
  one would;
* :func:`save_training_state` / :func:`restore_training_state`, the one-call conveniences a fit loop
  (:mod:`bayes_crl.stages`) uses: modules, optimizer, RNG states and loop variables.

The manifest's ``format`` is :data:`CHECKPOINT_FORMAT` (``"bayes_crl.checkpoint"``).
"""
from __future__ import annotations

import base64
import contextlib
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayes_crl._validation import BayesCRLValueError
from bayes_crl.codec import (
    FORMAT_VERSION,
    CheckpointError,
    _as_plain_json,
    _atomic_write_bytes,
    _prepare_tensors,
    _read_bundle,
    _serialise,
    flatten_state,
    from_json,
    to_json,
    unflatten_state,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "MANIFEST_NAME",
    "write_checkpoint",
    "read_checkpoint",
    "rng_state_to_json",
    "rng_state_from_json",
    "save_training_state",
    "restore_training_state",
]

CHECKPOINT_FORMAT = "bayes_crl.checkpoint"
MANIFEST_NAME = "manifest.json"
_STATE_PREFIX = "state-"


# ----------------------------------------------------------------------------------------------------
# Checkpoint primitives
# ----------------------------------------------------------------------------------------------------
def write_checkpoint(directory: str | os.PathLike, *, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> str:
    """Write a checkpoint atomically: ``state-<sha>.safetensors`` then ``manifest.json``.

    The tensor file gets a content-addressed name and is made durable first; the manifest (format,
    ``format_version``, tensor file name, its SHA-256 and size, ``meta``) is then written to a temporary
    file, fsynced and ``os.replace`` d over the old one. Until that replace the previous checkpoint in
    ``directory`` stays intact and readable; after it, older ``state-*.safetensors`` files are removed.
    One writer per directory.

    Parameters
    ----------
    directory : str or path-like
        Created if missing.
    tensors : dict of str to torch.Tensor
        Dense tensors (copied to CPU; any dtype safetensors supports).
    meta : dict
        Plain JSON data (step, seed, hyper-parameters, :func:`rng_state_to_json` output, the meta part of
        :func:`flatten_state`, ...). Use :func:`to_json` for tuples, non-finite floats or arrays.

    Returns
    -------
    str
        ``directory``, for :func:`read_checkpoint`.

    Raises
    ------
    BayesCRLValueError
        If ``tensors`` holds non-tensors or ``meta`` is not plain JSON.
    """
    d = Path(directory)
    tens = _prepare_tensors(tensors, "tensors")
    if not isinstance(meta, Mapping):
        raise BayesCRLValueError(f"'meta' must be a dict of JSON data. Got {type(meta).__name__}.")
    _as_plain_json(dict(meta), "meta")  # fail before touching the disk
    data, sha = _serialise(tens)
    name = f"{_STATE_PREFIX}{sha[:32]}.safetensors"
    manifest = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "tensor_file": name,
                "sha256": sha, "size": len(data), "torch_version": torch.__version__, "meta": dict(meta)}
    d.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(d / name, data)
    _atomic_write_bytes(d / MANIFEST_NAME, _as_plain_json(manifest, "meta"))
    for old in d.glob(f"{_STATE_PREFIX}*.safetensors"):
        if old.name != name:
            with contextlib.suppress(OSError):
                old.unlink()
    return str(d)


def read_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify a checkpoint written by :func:`write_checkpoint`.

    Parameters
    ----------
    directory : str or path-like

    Returns
    -------
    tensors : dict of str to torch.Tensor
        CPU tensors, as written.
    meta : dict
        The ``meta`` given to :func:`write_checkpoint`.

    Raises
    ------
    CheckpointError
        If the directory or manifest is missing, the manifest is not JSON, the ``format_version`` is
        unknown, or the tensor file is missing, truncated or altered (size / SHA-256 mismatch). No pickle
        is ever loaded.
    """
    tensors, doc = _read_bundle(Path(directory), MANIFEST_NAME, CHECKPOINT_FORMAT, "checkpoint")
    meta = doc.get("meta")
    if not isinstance(meta, dict):
        raise CheckpointError(f"'{Path(directory) / MANIFEST_NAME}' is malformed: 'meta' must be a JSON object.")
    return tensors, meta


# ----------------------------------------------------------------------------------------------------
# RNG states <-> JSON
# ----------------------------------------------------------------------------------------------------
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s, validate=True)), dtype=torch.uint8).clone()


def rng_state_to_json(generators: Mapping[str, torch.Generator | np.random.Generator] | None = None) -> dict:
    """Capture RNG states as plain JSON.

    Captures torch's global CPU generator (what Pyro samples with), numpy's global ``RandomState``,
    Python's :mod:`random`, and each named generator in ``generators``. CUDA generators are not captured
    (the library runs on CPU).

    Parameters
    ----------
    generators : dict of str to torch.Generator or numpy.random.Generator, optional
        E.g. ``{"rows": gen}`` for the generator that draws minibatch permutations.

    Returns
    -------
    dict
        Plain JSON; byte states are base64 strings.
    """
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    gens = {}
    for name, g in (generators or {}).items():
        if isinstance(g, torch.Generator):
            if g.device.type != "cpu":
                raise BayesCRLValueError(f"Generator {name!r} is on {g.device}; only CPU generators are captured.")
            gens[name] = {"type": "torch", "state": _b64(g.get_state())}
        elif isinstance(g, np.random.Generator):
            gens[name] = {"type": "numpy", "state": to_json(g, prefix=name)}
        else:
            raise BayesCRLValueError(f"Generator {name!r} must be a torch.Generator or numpy.random.Generator. Got "
                                     f"{type(g).__name__}.")
    return {
        "torch_cpu": _b64(torch.random.get_rng_state()),
        "numpy_global": {"keys": to_json(np.asarray(keys, dtype="<u4")), "pos": int(pos),
                         "has_gauss": int(has_gauss), "cached_gaussian": to_json(float(cached))},
        "python_random": {"version": version, "internal": list(internal), "gauss_next": to_json(gauss_next)},
        "generators": gens,
    }


def rng_state_from_json(obj: Mapping[str, Any], *,
                        generators: Mapping[str, torch.Generator | np.random.Generator] | None = None,
                        restore_global: bool = True) -> dict[str, torch.Generator | np.random.Generator]:
    """Restore RNG states captured by :func:`rng_state_to_json`.

    Parameters
    ----------
    obj : dict
        Output of :func:`rng_state_to_json` (after a JSON round trip).
    generators : dict of str to generator, optional
        Generators to set in place, by name; named states without a generator here get a new one.
    restore_global : bool, default True
        Also set torch's global CPU generator, numpy's global state and :mod:`random`.

    Returns
    -------
    dict of str to generator
        Every named generator of ``obj``, restored.

    Raises
    ------
    CheckpointError
        If ``obj`` is malformed, or a generator given has the wrong type for its stored state.
    """
    given = dict(generators or {})
    out: dict[str, torch.Generator | np.random.Generator] = {}
    try:
        for name, spec in obj.get("generators", {}).items():
            if spec["type"] == "torch":
                g = given[name] if given.get(name) is not None else torch.Generator()
                if not isinstance(g, torch.Generator):
                    raise TypeError(f"generator {name!r} was a torch.Generator when saved, got {type(g).__name__}")
                g.set_state(_unb64(spec["state"]))
            elif spec["type"] == "numpy":
                restored = from_json(spec["state"])
                g = given.get(name)
                if g is None:
                    g = restored
                elif isinstance(g, np.random.Generator):
                    g.bit_generator.state = restored.bit_generator.state
                else:
                    raise TypeError(f"generator {name!r} was a numpy Generator when saved, got {type(g).__name__}")
            else:
                raise ValueError(f"unknown generator type {spec['type']!r}")
            out[name] = g
        if restore_global:
            torch.random.set_rng_state(_unb64(obj["torch_cpu"]))
            npg = obj["numpy_global"]
            np.random.set_state(("MT19937", from_json(npg["keys"]).astype(np.uint32), int(npg["pos"]),
                                 int(npg["has_gauss"]), float(from_json(npg["cached_gaussian"]))))
            pr = obj["python_random"]
            random.setstate((int(pr["version"]), tuple(int(v) for v in pr["internal"]), from_json(pr["gauss_next"])))
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"The stored RNG state could not be restored: {exc}.") from None
    return out


# ----------------------------------------------------------------------------------------------------
# Fit-loop conveniences
# ----------------------------------------------------------------------------------------------------
def save_training_state(directory: str | os.PathLike, *, modules: Mapping[str, torch.nn.Module],
                        optimizer: torch.optim.Optimizer | None = None,
                        generators: Mapping[str, torch.Generator | np.random.Generator] | None = None,
                        tensors: Mapping[str, torch.Tensor] | None = None, meta: Mapping[str, Any] | None = None,
                        ) -> str:
    """Checkpoint a training loop in one call: modules, optimizer, RNG states and loop variables.

    Parameters
    ----------
    directory : str or path-like
    modules : dict of str to torch.nn.Module
        E.g. ``{"net": net, "global_guide": gg}``.
    optimizer : torch.optim.Optimizer, optional
    generators : dict of str to generator, optional
        Named generators besides the global ones (see :func:`rng_state_to_json`).
    tensors : dict of str to torch.Tensor, optional
        Extra loop tensors (e.g. the row permutation, the loss trace); returned by
        :func:`restore_training_state` under the same names.
    meta : dict, optional
        Extra loop values (step, position, counters, hyper-parameters to check on resume); encoded with
        :func:`to_json`, so tuples, numpy scalars, arrays and non-finite floats are fine.

    Returns
    -------
    str
        ``directory``.
    """
    st, state_meta = flatten_state({k: m.state_dict() for k, m in modules.items()},
                                   optimizer.state_dict() if optimizer is not None else None)
    extra = _prepare_tensors(tensors or {}, "tensors")
    st.update({f"extra/{k}": v for k, v in extra.items()})
    doc = {**state_meta, "rng": rng_state_to_json(generators), "extra": to_json(dict(meta or {}), prefix="meta")}
    return write_checkpoint(directory, tensors=st, meta=doc)


def restore_training_state(directory: str | os.PathLike, *, modules: Mapping[str, torch.nn.Module],
                           optimizer: torch.optim.Optimizer | None = None,
                           generators: Mapping[str, torch.Generator | np.random.Generator] | None = None,
                           restore_global_rng: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a checkpoint written by :func:`save_training_state` into live objects, in place.

    Parameters
    ----------
    directory : str or path-like
    modules : dict of str to torch.nn.Module
        The same names as when saved; built with the same configuration.
    optimizer : torch.optim.Optimizer, optional
        Built over the same parameters in the same order.
    generators : dict of str to generator, optional
        Set in place from the saved states of the same names.
    restore_global_rng : bool, default True
        Restore torch's, numpy's and :mod:`random`'s global states (call inside the fit's RNG guard).

    Returns
    -------
    tensors : dict of str to torch.Tensor
        The extra tensors given to :func:`save_training_state`.
    meta : dict
        The extra meta given to :func:`save_training_state`, decoded.

    Raises
    ------
    CheckpointError
        If the checkpoint is unreadable (see :func:`read_checkpoint`) or does not fit the modules or
        optimizer (different names, shapes or parameter counts).
    """
    tensors, meta = read_checkpoint(directory)
    sds, osd = unflatten_state(tensors, meta)
    if set(sds) != set(modules):
        raise CheckpointError(f"The checkpoint in '{directory}' holds modules {sorted(sds)}, but {sorted(modules)} "
                              "were given.")
    try:
        for name, m in modules.items():
            m.load_state_dict(sds[name])
        if optimizer is not None:
            if osd is None:
                raise ValueError("the checkpoint holds no optimizer state")
            optimizer.load_state_dict(osd)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"The checkpoint in '{directory}' does not fit this model: {exc}. It was written for a "
                              "different configuration (sizes, prior or optimizer).") from None
    rng_state_from_json(meta.get("rng", {}), generators=generators, restore_global=restore_global_rng)
    extra = {k[len("extra/"):]: v for k, v in tensors.items() if k.startswith("extra/")}
    return extra, from_json(meta.get("extra", {}))
