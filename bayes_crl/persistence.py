"""Saving and loading without pickle: one import point for training checkpoints and fitted models.

The work is split by job; this module re-exports the public names of all three so that
``from bayes_crl.persistence import ...`` keeps working:

* :mod:`bayes_crl.codec`: the format both kinds of file share: the tagged JSON codec
  (:func:`to_json` / :func:`from_json`), :func:`flatten_state` / :func:`unflatten_state`, the
  safetensors + JSON bundle with its SHA-256 check and atomic writes, :class:`CheckpointError` and the
  format versions.
* :mod:`bayes_crl.checkpoint`: training checkpoints: :func:`write_checkpoint` /
  :func:`read_checkpoint`, RNG states (:func:`rng_state_to_json` / :func:`rng_state_from_json`) and the
  fit-loop conveniences :func:`save_training_state` / :func:`restore_training_state`.
* :mod:`bayes_crl.model_file`: fitted models: :func:`save_model` / :func:`load_model`.
"""
from bayes_crl.checkpoint import (
    CHECKPOINT_FORMAT,
    MANIFEST_NAME,
    read_checkpoint,
    restore_training_state,
    rng_state_from_json,
    rng_state_to_json,
    save_training_state,
    write_checkpoint,
)
from bayes_crl.codec import (
    FORMAT_VERSION,
    SUPPORTED_FORMAT_VERSIONS,
    CheckpointError,
    flatten_state,
    from_json,
    to_json,
    unflatten_state,
)
from bayes_crl.model_file import MODEL_FORMAT, MODEL_JSON_NAME, MODEL_TENSOR_NAME, load_model, save_model

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
