"""Real multi-environment data shipped with the package.

:func:`load_sachs` reads the Sachs et al. (2005) flow-cytometry data: 7466 single cells, 11 signalling
molecules, measured in 9 experimental conditions (the environments), with the 17-arc consensus graph as the
reference. :func:`sachs_latent_data` turns a subset of its variables into a latent causal representation
learning problem the way the paper does with real data: the measured variables play the latent causal
variables and are observed only through a random injective nonlinear map. Source, licence and how the
condition labels were recovered: ``bayes_crl/datasets/data/README.md``.

Caveats a user should know (they bound what recovery can mean here): the reference graph is a literature
consensus, not ground truth; several conditions inhibit a molecule's *activity* rather than the measured
phosphorylation (soft interventions with partly unknown targets); PKA and PKC act on most of the pathway,
so any subset without them has hidden confounders; and 9 environments meet the theory's ``2 l + 1`` only for
``l <= 4``.
"""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from bayes_crl._validation import BayesCRLValueError, check_random_state, check_scalar

__all__ = ["SACHS_CONDITIONS", "SACHS_CONSENSUS_EDGES", "SACHS_VARIABLES", "RealLatentData", "SachsData",
           "load_sachs", "sachs_latent_data"]

#: Conventional names of the 11 columns, in file order (file headers: praf, pmek, plcg, PIP2, PIP3, p44/42,
#: pakts473, PKA, PKC, P38, pjnk).
SACHS_VARIABLES: tuple[str, ...] = ("Raf", "Mek", "Plcg", "PIP2", "PIP3", "Erk", "Akt", "PKA", "PKC", "P38",
                                    "Jnk")
_FILE_COLUMNS = ("praf", "pmek", "plcg", "PIP2", "PIP3", "p44/42", "pakts473", "PKA", "PKC", "P38", "pjnk")

#: The 9 conditions in file order: (label, rows, reagent and its intended target per Sachs et al. Table 1).
SACHS_CONDITIONS: tuple[tuple[str, int, str], ...] = (
    ("cd3cd28", 853, "anti-CD3/CD28 (general stimulation)"),
    ("cd3cd28+icam2", 902, "anti-CD3/CD28 + ICAM-2 (general stimulation)"),
    ("cd3cd28+aktinhib", 911, "Akt inhibitor (Akt activity)"),
    ("cd3cd28+g0076", 723, "G06976 (PKC inhibitor)"),
    ("cd3cd28+psitect", 810, "psitectorigenin (PIP2 inhibitor)"),
    ("cd3cd28+u0126", 799, "U0126 (MEK activity inhibitor)"),
    ("cd3cd28+ly", 848, "LY294002 (PI3K inhibitor; PI3K not measured)"),
    ("pma", 913, "PMA (PKC activator)"),
    ("b2camp", 707, "beta2cAMP (PKA activator)"),
)

#: The 17-arc consensus DAG (bnlearn repository; parent, child).
SACHS_CONSENSUS_EDGES: tuple[tuple[str, str], ...] = (
    ("Erk", "Akt"), ("PKA", "Akt"), ("Mek", "Erk"), ("PKA", "Erk"), ("PKA", "Jnk"), ("PKC", "Jnk"),
    ("PKA", "Mek"), ("PKC", "Mek"), ("Raf", "Mek"), ("PKA", "P38"), ("PKC", "P38"), ("PIP3", "PIP2"),
    ("Plcg", "PIP2"), ("Plcg", "PIP3"), ("PKC", "PKA"), ("PKA", "Raf"), ("PKC", "Raf"),
)

_SHA256 = "fc331dcd0bc1d8765986b88cd1d23dd5a3f52e4ffc299fdf96de9d522ddf01aa"


@dataclass(frozen=True)
class SachsData:
    """Measurements, condition labels and the reference graph restricted to the chosen variables.

    Attributes
    ----------
    values : ndarray, shape (7466, p)
        Intensities (natural log when loaded with ``log=True``).
    env : ndarray of str, shape (7466,)
        Condition label of each cell (see :data:`SACHS_CONDITIONS`).
    names : tuple of str, length p
    adjacency : ndarray of int, shape (p, p)
        Consensus graph among the chosen variables, ``A[parent, child]``.
    """

    values: np.ndarray
    env: np.ndarray
    names: tuple[str, ...]
    adjacency: np.ndarray


@dataclass(frozen=True)
class RealLatentData:
    """Real variables used as latents and observed through a random injective map.

    Attributes
    ----------
    x : ndarray, shape (N, d)
        Observations ``f(z) + eps``.
    env : ndarray, shape (N,)
        Environment labels.
    z : ndarray, shape (N, l)
        The latent (measured) variables, standardised over all rows.
    adjacency : ndarray of int, shape (l, l)
        Reference graph ``A[parent, child]``.
    latent_names : tuple of str
    mixing_params : dict
        Parameters of the mixing (:func:`bayes_crl.simulate.mixing.apply_mixing`).
    """

    x: np.ndarray
    env: np.ndarray
    z: np.ndarray
    adjacency: np.ndarray
    latent_names: tuple[str, ...]
    mixing_params: dict[str, np.ndarray]


def _check_variables(variables: Any, owner: str) -> list[str]:
    if variables is None:
        return list(SACHS_VARIABLES)
    if isinstance(variables, str) or not hasattr(variables, "__iter__"):
        raise BayesCRLValueError(f"'variables' of {owner} must be a sequence of names from {SACHS_VARIABLES}. "
                                 f"Got {variables!r}.")
    names = list(variables)
    bad = [v for v in names if v not in SACHS_VARIABLES]
    if bad or not names or len(set(names)) != len(names):
        raise BayesCRLValueError(f"'variables' of {owner} must be distinct names from {SACHS_VARIABLES}. "
                                 f"Got {names!r}" + (f" (unknown: {bad})." if bad else "."))
    return names


def load_sachs(variables: Any = None, *, log: bool = True) -> SachsData:
    """Load the Sachs et al. (2005) flow-cytometry data with condition labels and the consensus graph.

    Parameters
    ----------
    variables : sequence of str, optional
        Subset and order of :data:`SACHS_VARIABLES` (default all 11).
    log : bool, default True
        Natural log of the intensities (all are >= 1).

    Returns
    -------
    SachsData

    Raises
    ------
    BayesCRLValueError
        Unknown or repeated variable names.
    RuntimeError
        The shipped file does not match its recorded SHA-256 (a damaged installation).
    """
    names = _check_variables(variables, "load_sachs")
    raw = gzip.decompress(resources.files("bayes_crl.datasets").joinpath("data/sachs_cyto_full_data.csv.gz")
                          .read_bytes())
    if hashlib.sha256(raw).hexdigest() != _SHA256:
        raise RuntimeError("bayes_crl/datasets/data/sachs_cyto_full_data.csv.gz does not match its recorded "
                           "SHA-256; reinstall bayes_crl.")
    lines = raw.decode("ascii").splitlines()
    header = tuple(lines[0].split(","))
    if header != _FILE_COLUMNS:  # pragma: no cover - guarded by the hash
        raise RuntimeError(f"unexpected columns {header}")
    values = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    env = np.concatenate([np.full(n, label, dtype=object) for label, n, _ in SACHS_CONDITIONS]).astype(str)
    idx = [SACHS_VARIABLES.index(v) for v in names]
    values = values[:, idx]
    if log:
        values = np.log(values)
    adjacency = np.zeros((len(names), len(names)), dtype=np.int64)
    for parent, child in SACHS_CONSENSUS_EDGES:
        if parent in names and child in names:
            adjacency[names.index(parent), names.index(child)] = 1
    return SachsData(values=values, env=env, names=tuple(names), adjacency=adjacency)


def sachs_latent_data(variables: Any = ("Raf", "Mek", "Erk", "Akt"), *, n_obs_dims: int = 10,
                      mixing_layers: int = 3, obs_noise_std: float = 0.01, random_state: Any = 0) -> RealLatentData:
    """The Sachs measurements as latent causal variables behind a random injective nonlinear mixing.

    The log intensities of ``variables`` are standardised over all cells and mixed by the simulator's
    leaky-ReLU MLP (:func:`bayes_crl.simulate.mixing.random_mixing`, kind ``"mlp"``) into ``n_obs_dims``
    columns, plus Gaussian noise of sd ``obs_noise_std``. The default subset is the Raf -> Mek -> Erk -> Akt
    cascade (consensus edges Raf -> Mek, Mek -> Erk, Erk -> Akt; PKA, a parent of all four, is left out, so it
    acts as a hidden confounder). With 9 conditions, ``l <= 4`` keeps ``2 l + 1 <= 9``.

    Parameters
    ----------
    variables : sequence of str, default ("Raf", "Mek", "Erk", "Akt")
    n_obs_dims : int, default 10
        Observed dimension d (>= number of variables).
    mixing_layers : int, default 3
    obs_noise_std : float, default 0.01
    random_state : None, int or numpy.random.Generator, default 0

    Returns
    -------
    RealLatentData
    """
    from bayes_crl.simulate.mixing import apply_mixing, random_mixing

    owner = "sachs_latent_data"
    data = load_sachs(variables)
    l = len(data.names)
    d = check_scalar(n_obs_dims, "n_obs_dims", int, owner, min_val=l)
    k = check_scalar(mixing_layers, "mixing_layers", int, owner, min_val=1)
    s = check_scalar(obs_noise_std, "obs_noise_std", float, owner, min_val=0.0)
    rng = check_random_state(random_state)
    z = (data.values - data.values.mean(0)) / data.values.std(0)
    params = random_mixing("mlp", l, d, n_layers=k, random_state=rng)
    x = apply_mixing(params, z)
    x = x + s * rng.standard_normal(x.shape)
    return RealLatentData(x=x, env=data.env, z=z, adjacency=data.adjacency, latent_names=data.names,
                          mixing_params=params)
