"""Simulators of latent causal models across environments, and data I/O.

Convention: adjacency matrices are ``A[parent, child]``; weights are ``W[env, parent, child]``.
"""

from .graphs import chain_dag, random_dag
from .io import load_observations
from .latent_anm import LatentANMData, condition_iv_holds, simulate_latent_anm
from .spike_slab import SpikeSlabLatents, simulate_spike_slab_latents

__all__ = [
    "LatentANMData",
    "chain_dag",
    "condition_iv_holds",
    "load_observations",
    "random_dag",
    "simulate_latent_anm",
    "SpikeSlabLatents",
    "simulate_spike_slab_latents",
]
