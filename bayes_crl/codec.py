"""The storage codec shared by training checkpoints and saved models, with no pickle anywhere.

Everything bayes_crl writes is a bundle of two files: a `safetensors <https://huggingface.co/docs/safetensors>`_
file holding every tensor and a JSON document holding everything else plus the SHA-256 and byte size of
the tensor file. This module holds what both kinds of bundle need, so that :mod:`bayes_crl.checkpoint`
and :mod:`bayes_crl.model_file` agree on one format:

* the tagged JSON codec :func:`to_json` / :func:`from_json` (tuples, non-finite floats, non-string dict
  keys, arrays and numpy generators survive the round trip);
* :func:`flatten_state` / :func:`unflatten_state`, which turn module and optimizer ``state_dict()`` s
  into a flat tensor map plus JSON and back;
* atomic writes (temporary file in the same directory, ``flush`` + ``os.fsync``, ``os.replace``) and the
  bundle reader, which checks ``format``, ``format_version`` and the tensor file's size and SHA-256
  before safetensors parses it;
* :class:`CheckpointError` and the format version numbers.

Reading never unpickles and never imports anything named in a file: a tensor file is parsed by
safetensors (a JSON header plus raw bytes) only after its hash matched, and classes are looked up in
fixed allow-lists. Pyro's own ``get_param_store().save``/``torch.load`` unpickle, which is why they are
not used here (``tests/test_no_pickle.py`` keeps it that way).

JSON documents
--------------
Every document carries ``format``, ``format_version`` (this module reads
:data:`SUPPORTED_FORMAT_VERSIONS`), ``tensor_file``, ``sha256`` and ``size``. Values that plain JSON
cannot hold are written as one-key objects whose key is a tag: ``{"__tuple__": [...]}``,
``{"__float__": "nan"}``, ``{"__dict__": [[key, value], ...]}`` (non-string keys),
``{"__bytes__": "<base64>"}``, ``{"__array__": {...}}`` (a small inline array),
``{"__tensor__": "<name in the tensor file>"}`` and ``{"__np_generator__": {...}}``.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import numbers
import os
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from bayes_crl._validation import BayesCRLValueError

__all__ = [
    "CheckpointError",
    "FORMAT_VERSION",
    "SUPPORTED_FORMAT_VERSIONS",
    "flatten_state",
    "unflatten_state",
    "to_json",
    "from_json",
]

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = frozenset({1})
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
# State dicts <-> (tensors, JSON)
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
