"""Saved models: a fitted :class:`~bayes_crl.LatentCausalModel` as a directory, without pickle.

:func:`save_model` writes ``model.safetensors`` (the state of the fitted networks and variational guide,
and the fitted numpy arrays) and ``model.json`` (format :data:`MODEL_FORMAT`, ``format_version``, the
tensor file's SHA-256, the constructor arguments, the other fitted attributes and what is needed to
rebuild the networks) with the bundle format of :mod:`bayes_crl.codec`; :func:`load_model` verifies and
rebuilds it. Edge priors are stored as their dataclass fields and looked up by class name in
:data:`bayes_crl.priors.PRIORS` (or a mapping the caller passes), never imported from the file.

The estimator class is passed in by :meth:`LatentCausalModel.save <bayes_crl.LatentCausalModel.save>` /
:meth:`~bayes_crl.LatentCausalModel.load`, so this module never imports :mod:`bayes_crl.estimator`; the
network, guide, noise and result classes are imported inside :func:`load_model`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from bayes_crl._errors import NotFittedError
from bayes_crl._validation import BayesCRLValueError
from bayes_crl.codec import (
    FORMAT_VERSION,
    CheckpointError,
    _as_plain_json,
    _atomic_write_bytes,
    _fsync_dir,
    _prepare_tensors,
    _read_bundle,
    _serialise,
    flatten_state,
    from_json,
    to_json,
    unflatten_state,
)
from bayes_crl.priors import PRIORS, EdgePrior

__all__ = [
    "MODEL_FORMAT",
    "MODEL_JSON_NAME",
    "MODEL_TENSOR_NAME",
    "save_model",
    "load_model",
]

MODEL_FORMAT = "bayes_crl.LatentCausalModel"
MODEL_JSON_NAME = "model.json"
MODEL_TENSOR_NAME = "model.safetensors"


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
    params = {k: (str(v) if isinstance(v, (os.PathLike, torch.device)) else v) for k, v in params.items()}
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
