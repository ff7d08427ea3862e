"""Saving and loading without pickle: training checkpoints and fitted models.

Everything is written as two files: a `safetensors <https://huggingface.co/docs/safetensors>`_ file
holding every tensor and a JSON document holding everything else (step, seeds, hyper-parameters, RNG
states, the names that tie the JSON to the tensors) plus the SHA-256 and byte size of the tensor file.
Reading never unpickles and never imports anything named in a file: a tensor file is parsed by
safetensors (a JSON header plus raw bytes) only after its hash matched, and classes are looked up in
fixed allow-lists. Pyro's own ``get_param_store().save``/``torch.load`` unpickle, which is why they are
not used here (``tests/test_no_pickle.py`` keeps it that way).

Three layers
------------
* Primitives: :func:`write_checkpoint` / :func:`read_checkpoint` write and verify one
  ``manifest.json`` + ``state-<sha>.safetensors`` pair atomically (temporary file in the same directory,
  ``flush`` + ``os.fsync``, ``os.replace``; the manifest is replaced last, so it is the commit point and
  a crash leaves the previous checkpoint readable).
* Helpers that turn live objects into ``(tensors, JSON)`` and back: :func:`flatten_state` /
  :func:`unflatten_state` (module ``state_dict()`` s and optimizer state, e.g. Adam's per-parameter
  ``step``/``exp_avg``/``exp_avg_sq`` and ``param_groups``), :func:`rng_state_to_json` /
  :func:`rng_state_from_json` (torch CPU, torch/numpy generators, numpy global and :mod:`random`), and
  the tagged JSON codec :func:`to_json` / :func:`from_json` (tuples, non-finite floats, non-string dict
  keys, arrays survive the round trip).
* Conveniences for a fit loop, :func:`save_training_state` / :func:`restore_training_state`, and for
  the estimator, :func:`save_model` / :func:`load_model`.

JSON documents
--------------
Both documents carry ``format`` (``"bayes_crl.checkpoint"`` or ``"bayes_crl.LatentCausalModel"``),
``format_version`` (this module reads :data:`SUPPORTED_FORMAT_VERSIONS`), ``tensor_file``, ``sha256``
and ``size``. Values that plain JSON cannot hold are written as one-key objects whose key is a tag:
``{"__tuple__": [...]}``, ``{"__float__": "nan"}``, ``{"__dict__": [[key, value], ...]}`` (non-string
keys), ``{"__bytes__": "<base64>"}``, ``{"__array__": {...}}`` (a small inline array),
``{"__tensor__": "<name in the tensor file>"}`` and ``{"__np_generator__": {...}}``.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import numbers
import os
import random
import secrets
import shutil
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from bayes_crl._errors import NotFittedError
from bayes_crl._validation import BayesCRLValueError
from bayes_crl.priors import PRIORS, EdgePrior

__all__ = [
    "CheckpointError",
    "CHECKPOINT_FORMAT",
    "MODEL_FORMAT",
    "FORMAT_VERSION",
    "SUPPORTED_FORMAT_VERSIONS",
    "MANIFEST_NAME",
    "MODEL_JSON_NAME",
    "MODEL_TENSOR_NAME",
    "write_checkpoint",
    "read_checkpoint",
    "flatten_state",
    "unflatten_state",
    "rng_state_to_json",
    "rng_state_from_json",
    "to_json",
    "from_json",
    "save_training_state",
    "restore_training_state",
    "save_model",
    "load_model",
]

CHECKPOINT_FORMAT = "bayes_crl.checkpoint"
MODEL_FORMAT = "bayes_crl.LatentCausalModel"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = frozenset({1})
MANIFEST_NAME = "manifest.json"
MODEL_JSON_NAME = "model.json"
MODEL_TENSOR_NAME = "model.safetensors"
_STATE_PREFIX = "state-"
_MAX_JSON_BYTES = 256 * 2**20  # a JSON document larger than this is refused unread

_TAGS = frozenset({"__tuple__", "__float__", "__dict__", "__bytes__", "__array__", "__tensor__",
                   "__np_generator__"})
# numpy bit generators that a file may name (looked up in this table, never by getattr on a file's string)
_BIT_GENERATORS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM, "MT19937": np.random.MT19937,
                   "Philox": np.random.Philox, "SFC64": np.random.SFC64}
_ARRAY_KINDS = "biufc"  # bool, ints, floats, complex: never object or void dtypes


class CheckpointError(BayesCRLValueError):
    """A checkpoint or saved model could not be read: missing, truncated, altered, of an unknown format
    version, or not a bayes_crl file at all (a pickle, for example). Nothing from such a file is executed."""


# ----------------------------------------------------------------------------------------------------
# Tagged JSON codec
# ----------------------------------------------------------------------------------------------------
def _is_tag_like(key: Any) -> bool:
    return isinstance(key, str) and len(key) > 4 and key.startswith("__") and key.endswith("__")


def _array_to_inline(a: np.ndarray, is_torch: bool) -> dict:
    if a.dtype.kind not in _ARRAY_KINDS:
        raise BayesCRLValueError(f"Arrays of dtype {a.dtype} cannot be stored; only bool and numeric dtypes can.")
    data = np.ascontiguousarray(a)
    return {"__array__": {"dtype": data.dtype.str, "shape": list(data.shape), "torch": is_torch,
                          "data": base64.b64encode(data.tobytes()).decode("ascii")}}


def _array_from_inline(spec: Any) -> np.ndarray | torch.Tensor:
    if not isinstance(spec, Mapping) or not {"dtype", "shape", "data"} <= set(spec):
        raise CheckpointError("A stored '__array__' value is malformed (it needs 'dtype', 'shape' and 'data').")
    try:
        dtype = np.dtype(str(spec["dtype"]))
        if dtype.kind not in _ARRAY_KINDS:
            raise TypeError(f"dtype {dtype} is not allowed")
        shape = tuple(int(s) for s in spec["shape"])
        out = np.frombuffer(base64.b64decode(spec["data"], validate=True), dtype=dtype).reshape(shape).copy()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"A stored '__array__' value could not be decoded: {exc}.") from None
    return torch.from_numpy(out) if spec.get("torch", False) else out


def to_json(obj: Any, *, tensors: dict[str, torch.Tensor] | None = None, prefix: str = "") -> Any:
    """Encode ``obj`` as plain JSON data, tagging what JSON cannot hold so that :func:`from_json` restores it.

    Parameters
    ----------
    obj : Any
        ``None``, bool, int, float (also non-finite), str, bytes, list, tuple, dict (any hashable
        keys of these types), numpy scalars and bool/numeric arrays, torch tensors and
        :class:`numpy.random.Generator` s, nested freely.
    tensors : dict, optional
        Sink for arrays and tensors. When given, each array or tensor is moved into it under its path
        (``prefix`` followed by ``/``-joined keys and indices) and replaced by ``{"__tensor__": name}``;
        otherwise arrays are written inline (base64), which suits small ones only.
    prefix : str, default ""
        Path of ``obj`` itself, used to name tensors and in error messages.

    Returns
    -------
    Any
        Data that :func:`json.dumps` accepts with ``allow_nan=False``.

    Raises
    ------
    BayesCRLValueError
        For a value of another type (the message names its path), or two tensors with the same name.
    """
    where = prefix or "<root>"
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        f = float(obj)
        return f if math.isfinite(f) else {"__float__": repr(f)}
    if isinstance(obj, (bytes, bytearray)):
        return {"__bytes__": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        is_torch = isinstance(obj, torch.Tensor)
        if tensors is None:
            return _array_to_inline(obj.detach().cpu().numpy() if is_torch else obj, is_torch)
        if not prefix:
            raise BayesCRLValueError("A tensor needs a non-empty 'prefix' to be named in the tensor file.")
        if prefix in tensors:
            raise BayesCRLValueError(f"Two values would be stored under the tensor name {prefix!r}; rename one key.")
        if not is_torch and obj.dtype.kind not in _ARRAY_KINDS:
            raise BayesCRLValueError(f"The array at '{where}' has dtype {obj.dtype}; only bool and numeric "
                                     "arrays can be stored.")
        tensors[prefix] = obj if is_torch else torch.from_numpy(np.ascontiguousarray(obj))
        return {"__tensor__": prefix} if is_torch else {"__tensor__": prefix, "numpy": True}
    if isinstance(obj, np.random.Generator):
        bg = obj.bit_generator
        name = type(bg).__name__
        if _BIT_GENERATORS.get(name) is not type(bg):
            raise BayesCRLValueError(f"The numpy Generator at '{where}' uses the bit generator {name!r}; only "
                                     f"{sorted(_BIT_GENERATORS)} can be stored.")
        return {"__np_generator__": {"bit_generator": name, "state": to_json(bg.state, prefix=f"{prefix}/state")}}
    if isinstance(obj, tuple):
        return {"__tuple__": [to_json(v, tensors=tensors, prefix=f"{prefix}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [to_json(v, tensors=tensors, prefix=f"{prefix}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not _is_tag_like(k) for k in obj):
            return {k: to_json(v, tensors=tensors, prefix=f"{prefix}/{k}") for k, v in obj.items()}
        return {"__dict__": [[to_json(k, prefix=f"{prefix}/<key>"), to_json(v, tensors=tensors, prefix=f"{prefix}/{k}")]
                             for k, v in obj.items()]}
    raise BayesCRLValueError(
        f"The value at '{where}' of type {type(obj).__name__} cannot be stored as JSON. Use None, bool, int, "
        "float, str, bytes, list, tuple, dict, a numeric array or a tensor.")


def from_json(obj: Any, *, tensors: Mapping[str, torch.Tensor] | None = None) -> Any:
    """Decode data written by :func:`to_json`.

    Parameters
    ----------
    obj : Any
        Plain JSON data (as returned by :func:`json.loads`).
    tensors : mapping, optional
        The tensors that ``{"__tensor__": name}`` references point into.

    Returns
    -------
    Any

    Raises
    ------
    CheckpointError
        On a malformed tag or a reference to a tensor that is not there.
    """
    if isinstance(obj, list):
        return [from_json(v, tensors=tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    tags = [k for k in obj if k in _TAGS]
    if not tags:
        return {k: from_json(v, tensors=tensors) for k, v in obj.items()}
    tag, val = tags[0], obj[tags[0]]
    try:
        if tag == "__tuple__":
            return tuple(from_json(v, tensors=tensors) for v in val)
        if tag == "__float__":
            if val not in ("nan", "inf", "-inf"):
                raise ValueError(f"{val!r} is not one of 'nan', 'inf', '-inf'")
            return float(val)
        if tag == "__dict__":
            out = {}
            for k, v in val:
                k = from_json(k)
                out[k] = from_json(v, tensors=tensors)
            return out
        if tag == "__bytes__":
            return base64.b64decode(val, validate=True)
        if tag == "__array__":
            return _array_from_inline(val)
        if tag == "__tensor__":
            if tensors is None or val not in tensors:
                raise CheckpointError(f"The JSON document refers to the tensor {val!r}, which the tensor file does "
                                      "not hold. The two files do not belong together.")
            t = tensors[val]
            return t.numpy() if obj.get("numpy", False) else t
        # __np_generator__
        cls = _BIT_GENERATORS.get(val["bit_generator"])
        if cls is None:
            raise ValueError(f"unknown bit generator {val['bit_generator']!r}")
        gen = np.random.Generator(cls())
        gen.bit_generator.state = from_json(val["state"])
        return gen
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"A stored {tag!r} value could not be decoded: {exc}.") from None


def _as_plain_json(meta: Any, what: str) -> bytes:
    try:
        return json.dumps(meta, allow_nan=False, indent=1).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise BayesCRLValueError(
            f"'{what}' must be plain JSON data (dict, list, str, int, finite float, bool, None): {exc}. Encode "
            "other values with bayes_crl.persistence.to_json first (it tags tuples, non-finite floats and arrays "
            "so that from_json restores them).") from None


# ----------------------------------------------------------------------------------------------------
# Atomic files and the tensor/JSON bundle
# ----------------------------------------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file beside ``path``, flush and fsync it, then ``os.replace`` it onto ``path``."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _prepare_tensors(tensors: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    if not isinstance(tensors, Mapping):
        raise BayesCRLValueError(f"'{what}' must be a dict of name -> torch.Tensor. Got {type(tensors).__name__}.")
    out = {}
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise BayesCRLValueError(f"Tensor names in '{what}' must be non-empty strings. Got {name!r}.")
        if not isinstance(t, torch.Tensor):
            raise BayesCRLValueError(f"'{what}[{name!r}]' must be a torch.Tensor. Got {type(t).__name__}; convert "
                                     "arrays with torch.from_numpy.")
        if t.layout != torch.strided:
            raise BayesCRLValueError(f"'{what}[{name!r}]' is a {t.layout} tensor; only dense tensors can be stored.")
        # A private contiguous CPU copy: safetensors refuses shared or strided storage, and the caller's
        # tensors may change while we write.
        out[name] = t.detach().to("cpu").clone(memory_format=torch.contiguous_format)
    return out


def _serialise(tensors: Mapping[str, torch.Tensor]) -> tuple[bytes, str]:
    data = _st_save(dict(tensors), metadata={"format": "bayes_crl"})
    return data, hashlib.sha256(data).hexdigest()


def _read_json(path: Path, what: str) -> Any:
    size = path.stat().st_size
    if size > _MAX_JSON_BYTES:
        raise CheckpointError(f"'{path}' is {size} bytes, too large for a {what}; it is not a bayes_crl file.")
    raw = path.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        hint = " It looks like a pickle, which bayes_crl never loads." if raw[:1] == b"\x80" else ""
        raise CheckpointError(f"'{path}' is not a valid {what} (not UTF-8 JSON: {exc}).{hint} The file is damaged "
                              "or was not written by bayes_crl.") from None


def _read_bundle(directory: Path, json_name: str, fmt: str, what: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read ``json_name`` in ``directory``, check format, version and the tensor file's size and SHA-256,
    then parse the tensor file with safetensors. Returns ``(tensors, document)``."""
    if not directory.exists():
        raise CheckpointError(f"No {what} at '{directory}': the path does not exist.")
    if not directory.is_dir():
        head = b""
        if directory.is_file():
            with open(directory, "rb") as f:
                head = f.read(4)
        kind = ""
        if head[:1] == b"\x80":
            kind = " It looks like a pickle; bayes_crl never unpickles files."
        elif head[:2] == b"PK":
            kind = " It looks like a zip archive (torch.save output?); bayes_crl never loads those."
        raise CheckpointError(f"'{directory}' is a file, not a {what} directory. A {what} is a directory holding "
                              f"'{json_name}' and a .safetensors file.{kind}")
    doc_path = directory / json_name
    if not doc_path.is_file():
        raise CheckpointError(f"'{directory}' holds no '{json_name}': it is not a {what}, or it was not written "
                              "completely (the JSON document is written last).")
    doc = _read_json(doc_path, what)
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise CheckpointError(f"'{doc_path}' is not a {what}: expected format {fmt!r}, got {got!r}.")
    version = doc.get("format_version")
    if isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
        raise CheckpointError(
            f"'{doc_path}' has format_version {version!r}, which this bayes_crl cannot read (it reads "
            f"{sorted(SUPPORTED_FORMAT_VERSIONS)}). It was probably written by a newer bayes_crl: upgrade to read it.")
    name, sha, size = doc.get("tensor_file"), doc.get("sha256"), doc.get("size")
    if (not isinstance(name, str) or not name.endswith(".safetensors") or Path(name).name != name
            or name.startswith(".") or not isinstance(sha, str) or not isinstance(size, int)):
        raise CheckpointError(f"'{doc_path}' is malformed: 'tensor_file' must name a .safetensors file in the same "
                              "directory and 'sha256'/'size' must be given.")
    tpath = directory / name
    if not tpath.is_file():
        raise CheckpointError(f"The tensor file '{tpath}' named by '{doc_path}' is missing.")
    data = tpath.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != size:
        raise CheckpointError(
            f"The tensor file '{tpath}' is {len(data)} bytes but '{json_name}' records {size}: it is "
            f"{'truncated' if len(data) < size else 'longer than written'} (SHA-256 mismatch). An interrupted copy? "
            "Copy it again from the source, or use an earlier checkpoint.")
    if digest != sha:
        raise CheckpointError(
            f"The tensor file '{tpath}' has been altered or corrupted: its SHA-256 is {digest}, but '{json_name}' "
            f"records {sha}. Copy it again from the source, or use an earlier checkpoint.")
    try:
        tensors = _st_load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"The tensor file '{tpath}' is not a valid safetensors file: {exc}.") from None
    return tensors, doc


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
# State dicts and RNG states <-> (tensors, JSON)
# ----------------------------------------------------------------------------------------------------
def flatten_state(module_state_dicts: Mapping[str, Mapping[str, Any]],
                  optimizer_state_dict: Mapping[str, Any] | None = None,
                  ) -> tuple[dict[str, torch.Tensor], dict]:
    """Turn module and optimizer ``state_dict()`` s into a flat tensor map plus JSON.

    Parameters
    ----------
    module_state_dicts : dict of str to state dict
        E.g. ``{"net": net.state_dict(), "global_guide": gg.state_dict()}``. Each module's
        ``_metadata`` (version info used by ``load_state_dict``) and any non-tensor extra state are kept.
    optimizer_state_dict : dict, optional
        ``optimizer.state_dict()``: per-parameter ``state`` (for Adam ``step``, ``exp_avg``,
        ``exp_avg_sq``) and ``param_groups`` (``lr``, ``betas`` as a tuple, ...).

    Returns
    -------
    tensors : dict of str to torch.Tensor
        Names ``state/modules/<module>/<key>`` and ``state/optimizer/state/<param id>/<key>``.
    meta_part : dict
        ``{"state": {...}}``, plain JSON referring to ``tensors`` by name: merge it into the ``meta`` of
        :func:`write_checkpoint`.
    """
    tensors: dict[str, torch.Tensor] = {}
    modules = {}
    for name, sd in module_state_dicts.items():
        if not isinstance(name, str) or "/" in name or not name:
            raise BayesCRLValueError(f"Module names must be non-empty strings without '/'. Got {name!r}.")
        modules[name] = {"entries": to_json(dict(sd), tensors=tensors, prefix=f"state/modules/{name}"),
                         "metadata": to_json(getattr(sd, "_metadata", None))}
    opt = None
    if optimizer_state_dict is not None:
        opt = to_json(dict(optimizer_state_dict), tensors=tensors, prefix="state/optimizer")
    return tensors, {"state": {"modules": modules, "optimizer": opt}}


def unflatten_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                    ) -> tuple[dict[str, OrderedDict], dict | None]:
    """Inverse of :func:`flatten_state`.

    Parameters
    ----------
    tensors : dict of str to torch.Tensor
    meta : dict
        A dict holding the ``"state"`` entry of :func:`flatten_state` (e.g. the ``meta`` returned by
        :func:`read_checkpoint`).

    Returns
    -------
    module_state_dicts : dict of str to OrderedDict
        Ready for ``module.load_state_dict``.
    optimizer_state_dict : dict or None
        Ready for ``optimizer.load_state_dict`` (integer parameter ids and tuples restored).
    """
    state = meta.get("state") if isinstance(meta, Mapping) else None
    if not isinstance(state, Mapping) or not isinstance(state.get("modules"), Mapping):
        raise CheckpointError("The checkpoint holds no module state ('state' entry missing from its meta); it was "
                              "not written with flatten_state.")
    out = {}
    for name, spec in state["modules"].items():
        sd = OrderedDict(from_json(spec.get("entries", {}), tensors=tensors))
        md = from_json(spec.get("metadata"))
        if md is not None:
            sd._metadata = OrderedDict(md)  # type: ignore[attr-defined]
        out[name] = sd
    opt = state.get("optimizer")
    return out, (from_json(opt, tensors=tensors) if opt is not None else None)


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


# ----------------------------------------------------------------------------------------------------
# Fitted models
# ----------------------------------------------------------------------------------------------------
_EXTRA_FITTED = ("_weight_draws", "_inclusion_context")  # private fitted attributes saved besides the public `*_` ones
_RESULT_OBJECTS = ("net", "global_guide", "prior", "noise")


def _known_priors(extra: Mapping[str, type] | None) -> dict[str, type]:
    known = {cls.__name__: cls for cls in PRIORS.values()}
    for name, cls in (extra or {}).items():
        if not (isinstance(cls, type) and issubclass(cls, EdgePrior) and dataclasses.is_dataclass(cls)):
            raise BayesCRLValueError(f"edge_priors[{name!r}] must be an EdgePrior dataclass. Got {cls!r}.")
        known[name] = cls
    return known


def _encode_prior(prior: EdgePrior, where: str) -> dict:
    if not dataclasses.is_dataclass(prior):
        raise BayesCRLValueError(f"The {where} {prior!r} is not a dataclass, so its settings cannot be saved. "
                                 "Define custom priors as frozen dataclasses like bayes_crl.priors.Horseshoe.")
    fields = {f.name: getattr(prior, f.name) for f in dataclasses.fields(prior)}
    return {"class": type(prior).__name__, "module": type(prior).__module__,
            "fields": to_json(fields, prefix=where)}


def _decode_prior(spec: Any, known: Mapping[str, type], path: Path) -> EdgePrior:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("class"), str):
        raise CheckpointError(f"'{path}' is malformed: an edge prior entry needs a 'class'.")
    cls = known.get(spec["class"])
    if cls is None:
        raise CheckpointError(
            f"'{path}' was saved with the custom edge prior {spec.get('module')}.{spec['class']}. Classes are never "
            f"imported from a file: pass load_model(path, LatentCausalModel, edge_priors={{{spec['class']!r}: {spec['class']}}}).")
    try:
        return cls(**from_json(spec.get("fields", {})))
    except TypeError as exc:
        raise CheckpointError(f"'{path}': the saved settings do not fit {cls.__name__}: {exc}.") from None


def _init_params(model: Any) -> dict[str, Any]:
    sig = inspect.signature(type(model).__init__)
    return {name: getattr(model, name) for name, p in sig.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and hasattr(model, name)}


def _net_config(net: torch.nn.Module) -> dict:
    linears = [m for m in net.encoder.net if isinstance(m, torch.nn.Linear)]
    return {"n_obs_dims": int(net.n_obs_dims), "n_envs": int(net.n_envs), "n_latents": int(net.n_latents),
            "hidden": int(linears[0].out_features) if len(linears) > 1 else 64, "n_layers": len(linears),
            "nonlinear": bool(net.features.nonlinear), "likelihood": str(net.likelihood),
            "encoder_env": bool(net.encoder.use_env), "min_obs_scale": float(net.min_obs_scale),
            "full_cov": bool(getattr(net.encoder, "full_cov", False))}


def _check_target(path: Path, overwrite: bool) -> bool:
    """Return whether ``path`` exists and will be replaced; raise if it may not be."""
    if not (path.exists() or path.is_symlink()):
        return False
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return True
    if not overwrite:
        raise FileExistsError(f"'{path}' already exists and is not empty. Pass overwrite=True to replace it, or "
                              "choose another path.")
    if path.is_dir() and not path.is_symlink() and not (path / MODEL_JSON_NAME).is_file():
        raise FileExistsError(f"'{path}' is a non-empty directory that does not hold a saved model "
                              f"(no '{MODEL_JSON_NAME}'); overwrite=True only replaces saved models. Choose another "
                              "path or empty it yourself.")
    return True


def save_model(model: Any, path: str | os.PathLike, *, overwrite: bool = False) -> str:
    """Save a fitted :class:`~bayes_crl.LatentCausalModel` without pickle.

    The model becomes a directory (any name; ``"my_model.bcrl"`` is a good convention) holding
    ``model.safetensors`` (the state of the fitted networks and variational guide, and the fitted numpy
    arrays) and ``model.json`` (format, ``format_version``, the tensor file's SHA-256, the constructor
    arguments, the other fitted attributes and what is needed to rebuild the networks). It is written in
    a temporary sibling directory and renamed into place, so a crash never leaves a half-written model.

    Parameters
    ----------
    model : LatentCausalModel
        A fitted estimator.
    path : str or path-like
        Target directory.
    overwrite : bool, default False
        Replace an existing saved model (or file) at ``path``. An empty directory is always replaced; a
        non-empty directory that is not a saved model is never deleted.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    NotFittedError
        If ``model`` is not fitted.
    FileExistsError
        If ``path`` exists, is not empty and ``overwrite`` is False.
    BayesCRLValueError
        If a hyper-parameter or fitted attribute cannot be stored (the message names it).
    """
    import bayes_crl

    if not hasattr(model, "result_"):
        raise NotFittedError(f"This {type(model).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                             "arguments before saving it.")
    if not isinstance(overwrite, bool):
        raise BayesCRLValueError(f"The 'overwrite' parameter of save_model must be a bool. Got {overwrite!r}.")
    path = Path(path)
    replace = _check_target(path, overwrite)
    result = model.result_

    params = _init_params(model)
    edge_prior = params.pop("edge_prior", None)
    if isinstance(edge_prior, EdgePrior):
        edge_prior_doc = {"instance": _encode_prior(edge_prior, "edge_prior")}
    else:
        edge_prior_doc = {"value": to_json(edge_prior, prefix="edge_prior")}
    params = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in params.items()}
    try:
        params_doc = to_json(params, prefix="params")
    except BayesCRLValueError as exc:
        raise BayesCRLValueError(f"A constructor argument of {type(model).__name__} cannot be saved: {exc}") from None

    tensors, state_meta = flatten_state({"net": result.net.state_dict(),
                                         "global_guide": result.global_guide.state_dict()})
    fitted: dict[str, Any] = {}
    names = sorted(k for k in vars(model) if k.endswith("_") and not k.startswith("__") and k != "result_")
    for name in names + [n for n in _EXTRA_FITTED if hasattr(model, n)]:
        try:
            fitted[name] = to_json(getattr(model, name), tensors=tensors, prefix=f"fitted/{name}")
        except BayesCRLValueError as exc:
            raise BayesCRLValueError(f"The fitted attribute '{name}' cannot be saved: {exc}") from None

    result_doc: dict[str, Any] = {"prior": _encode_prior(result.prior, "result_.prior"),
                                  "noise": to_json(dataclasses.asdict(result.noise)),
                                  "net_config": _net_config(result.net),
                                  "global_guide_config": {"n_envs": int(result.global_guide.n_envs),
                                                          "n_latents": int(result.net.n_latents)},
                                  "fields": {}}
    for f in dataclasses.fields(result):
        if f.name in _RESULT_OBJECTS:
            continue
        value = getattr(result, f.name)
        if f.name == "losses" and value is getattr(model, "loss_", None):
            result_doc["losses_is_loss_"] = True
            continue
        result_doc["fields"][f.name] = to_json(value, tensors=tensors, prefix=f"result/{f.name}")

    data, sha = _serialise(_prepare_tensors(tensors, "tensors"))
    doc = {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "tensor_file": MODEL_TENSOR_NAME,
           "sha256": sha, "size": len(data), "bayes_crl_version": bayes_crl.__version__,
           "torch_version": torch.__version__, "estimator": type(model).__name__, "params": params_doc,
           "edge_prior": edge_prior_doc, "fitted": fitted, "result": result_doc, **state_meta}
    doc_bytes = _as_plain_json(doc, "model.json")

    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    tmp.mkdir()
    old = None
    try:
        _atomic_write_bytes(tmp / MODEL_TENSOR_NAME, data)
        _atomic_write_bytes(tmp / MODEL_JSON_NAME, doc_bytes)
        if replace and not (path.is_dir() and not path.is_symlink() and not any(path.iterdir())):
            old = parent / f".{path.name}.{secrets.token_hex(6)}.old"
            os.replace(path, old)
        try:
            os.replace(tmp, path)  # onto a missing path or an empty directory
        except OSError:
            if old is not None:
                os.replace(old, path)
                old = None
            raise
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                old.unlink()
    return str(path)


def load_model(path: str | os.PathLike, estimator_cls: type, *, edge_priors: Mapping[str, type] | None = None) -> Any:
    """Load a :class:`~bayes_crl.LatentCausalModel` saved by :func:`save_model`.

    The networks are rebuilt from the stored configuration (without touching the caller's global torch
    RNG), their state is loaded, and the fitted attributes are set, so ``transform``, ``edge_inclusion_``
    and the other outputs equal those of the saved model exactly.

    Parameters
    ----------
    path : str or path-like
        A directory written by :func:`save_model`.
    estimator_cls : type
        The estimator class to rebuild (:class:`~bayes_crl.LatentCausalModel`; :meth:`LatentCausalModel.load
        <bayes_crl.LatentCausalModel.load>` passes it), so this module never imports the estimator.
    edge_priors : dict of str to type, optional
        Custom :class:`~bayes_crl.priors.EdgePrior` dataclasses by class name, needed only for models
        fitted with one (classes are never imported from the file).

    Returns
    -------
    LatentCausalModel

    Raises
    ------
    CheckpointError
        If ``path`` is missing, a file (e.g. a pickle), malformed, of an unknown ``format_version``, or its
        tensor file is truncated or altered. Nothing in the file is executed.
    """
    LatentCausalModel = estimator_cls  # noqa: N806 - the class the file was written from
    from bayes_crl.guides import GlobalGuide
    from bayes_crl.fit_result import FitResult
    from bayes_crl.models import LatentCausalNet
    from bayes_crl.noise import NoiseFamily

    path = Path(path)
    tensors, doc = _read_bundle(path, MODEL_JSON_NAME, MODEL_FORMAT, "saved model")
    known = _known_priors(edge_priors)
    doc_path = path / MODEL_JSON_NAME
    try:
        if doc.get("estimator") != LatentCausalModel.__name__:
            raise CheckpointError(f"'{doc_path}' holds a {doc.get('estimator')!r}, not a LatentCausalModel.")
        params = from_json(doc["params"])
        ep = doc["edge_prior"]
        params["edge_prior"] = _decode_prior(ep["instance"], known, doc_path) if "instance" in ep \
            else from_json(ep["value"])
        allowed = set(inspect.signature(LatentCausalModel.__init__).parameters) - {"self"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise CheckpointError(f"'{doc_path}' sets constructor arguments {unknown} that this bayes_crl's "
                                  "LatentCausalModel does not have; it was written by a newer version.")
        model = LatentCausalModel(**params)

        rdoc = doc["result"]
        prior = _decode_prior(rdoc["prior"], known, doc_path)
        noise = NoiseFamily(**from_json(rdoc["noise"]))
        cfg = rdoc["net_config"]
        gcfg = rdoc["global_guide_config"]
        sds, _ = unflatten_state(tensors, doc)
        with torch.random.fork_rng(devices=[]):  # module constructors draw random initial values
            net = LatentCausalNet(int(cfg["n_obs_dims"]), int(cfg["n_envs"]), int(cfg["n_latents"]),
                                  hidden=int(cfg["hidden"]), n_layers=int(cfg["n_layers"]),
                                  nonlinear=bool(cfg["nonlinear"]), likelihood=str(cfg["likelihood"]),
                                  encoder_env=bool(cfg.get("encoder_env", True)),
                                  min_obs_scale=float(cfg.get("min_obs_scale", 0.0)),
                                  full_cov=bool(cfg.get("full_cov", False)))
            gg = GlobalGuide(prior, int(gcfg["n_envs"]), int(gcfg["n_latents"]))
        net.load_state_dict(sds["net"])
        gg.load_state_dict(sds["global_guide"])

        fitted = {name: from_json(val, tensors=tensors) for name, val in doc["fitted"].items()}
        fields = {name: from_json(val, tensors=tensors) for name, val in rdoc["fields"].items()}
        if rdoc.get("losses_is_loss_"):
            fields["losses"] = fitted["loss_"]
        result_fields = {f.name for f in dataclasses.fields(FitResult)}
        fields = {k: v for k, v in fields.items() if k in result_fields}
        result = FitResult(net=net, global_guide=gg, prior=prior, noise=noise, **fields)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"'{doc_path}' could not be loaded: {type(exc).__name__}: {exc}. The file is damaged "
                              "or was written by an incompatible version of bayes_crl.") from None
    for name, value in fitted.items():
        setattr(model, name, value)
    model.result_ = result
    return model
