"""Baselines behind the estimator contract of :class:`bayes_crl.LatentCausalModel`.

``fit(x, env)`` returns ``self``, ``transform(x, env)`` gives (N, l) latents, ``loss_`` the training loss,
and the methods with a latent graph give a 0/1 point estimate ``edge_inclusion_`` (l, l) and
``adjacency_``. All use the same three-layer leaky-ReLU networks as the main model and plain torch loops.

- :class:`VAE`, :class:`BetaVAE`: standard normal prior, no environment.
- :class:`IVAE`: conditionally factorised Gaussian prior per environment (Khemakhem et al. 2020).
- :class:`LinearLatentSCM`: latent linear weight-variant causal model with an L1 penalty (Liu et al. 2022).
- :class:`LANCA`: deterministic causal autoencoder with a permutation-parameterised latent ANM and a
  residual MMD (arXiv 2512.22150).
"""
from bayes_crl.baselines.lanca import LANCA
from bayes_crl.baselines.linear_scm import LinearLatentSCM
from bayes_crl.baselines.vae import IVAE, VAE, BetaVAE

__all__ = ["VAE", "BetaVAE", "IVAE", "LinearLatentSCM", "LANCA"]
