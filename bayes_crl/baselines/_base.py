"""Shared estimator surface and training loop of the baselines (private).

Every baseline follows the contract of :class:`bayes_crl.LatentCausalModel`: ``__init__`` stores the
keyword hyper-parameters unchanged, ``fit(x, env)`` validates its inputs with the helpers of
:mod:`bayes_crl._validation`, standardises ``x`` (the scaling is stored and reapplied), trains, and
returns ``self``; ``transform(x, env)`` gives the (N, l) latent point estimates; ``loss_`` is the training
loss per step and per row.

The loop is plain torch (Adam, minibatches drawn by walking through a seeded random permutation of the
rows, as in :func:`bayes_crl.infer.fit_svi`): a step whose loss or gradient is not finite is not applied,
and ``max_bad_steps`` such steps in a row stop the fit with :class:`~bayes_crl.infer.NonFiniteLossError`.
All randomness (initialisation, minibatches, reparameterisation and Gumbel noise) is drawn inside
``torch.random.fork_rng`` seeded from ``random_state``, so the same ``random_state`` gives bitwise-equal
results on CPU and the caller's global torch RNG state is left untouched.
"""
from __future__ import annotations

import math
import time
from numbers import Integral
from typing import Any

import numpy as np
import torch
from torch import nn

from bayes_crl._errors import NotFittedError
from bayes_crl._validation import (BayesCRLValueError, check_array_2d, check_bool, check_env, check_random_state,
                                   check_scalar, check_seen_inputs)
from bayes_crl.infer import NonFiniteLossError

__all__ = ["BaselineEstimator", "gaussian_nll", "gaussian_kl"]

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_nll(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Negative Gaussian log-density summed over the last axis: ``-log N(x; loc, exp(log_scale)^2)``."""
    return (0.5 * ((x - loc) * torch.exp(-log_scale)) ** 2 + log_scale + 0.5 * _LOG_2PI).sum(-1)


def gaussian_kl(loc_q: torch.Tensor, scale_q: torch.Tensor, loc_p: torch.Tensor,
                log_scale_p: torch.Tensor) -> torch.Tensor:
    """``KL(N(loc_q, scale_q^2) || N(loc_p, exp(log_scale_p)^2))`` summed over the last axis."""
    var_ratio = (scale_q * torch.exp(-log_scale_p)) ** 2
    mean_term = ((loc_q - loc_p) * torch.exp(-log_scale_p)) ** 2
    return 0.5 * (var_ratio + mean_term - 1.0 - torch.log(var_ratio)).sum(-1)


class BaselineEstimator:
    """Base class of the baselines: validation, standardisation, seeding and the training loop.

    Subclasses set ``_min_envs`` and implement ``_build``, ``_loss``, ``_encode`` and optionally
    ``_param_groups``, ``_finalise`` and ``_validate_extra``.
    """

    #: Fewest environments ``fit`` accepts (2 for the methods whose prior depends on the environment).
    _min_envs: int = 1
    max_bad_steps: int = 50

    def __init__(self, n_latents: int = 3, *, num_steps: int = 6000, batch_size: int = 512,
                 learning_rate: float = 5e-3, hidden: int = 64, standardize: bool = True, random_state: Any = None):
        self.n_latents = n_latents
        self.num_steps = num_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.hidden = hidden
        self.standardize = standardize
        self.random_state = random_state

    # ------------------------------------------------------------------ hooks
    def _build(self, n_obs_dims: int, n_envs: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _loss(self, net: nn.Module, x: torch.Tensor, env: torch.Tensor, step: int,
              gen: torch.Generator) -> torch.Tensor:  # pragma: no cover - abstract
        """Mean training loss per row of the minibatch (a scalar)."""
        raise NotImplementedError

    def _encode(self, net: nn.Module, x: torch.Tensor, env: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Latent point estimates (N, l)."""
        raise NotImplementedError

    def _param_groups(self, net: nn.Module) -> list[dict]:
        return [{"params": list(net.parameters())}]

    def _finalise(self, net: nn.Module, x: torch.Tensor, env: torch.Tensor) -> None:
        """Set fitted attributes beyond the common ones (graphs, weights)."""

    def _validate_extra(self) -> None:
        """Checks of subclass hyper-parameters."""

    # ------------------------------------------------------------------ validation
    @property
    def _name(self) -> str:
        return type(self).__name__

    def _validate_params(self) -> None:
        o = self._name
        check_scalar(self.n_latents, "n_latents", Integral, o, min_val=1)
        check_scalar(self.num_steps, "num_steps", Integral, o, min_val=1)
        check_scalar(self.batch_size, "batch_size", Integral, o, min_val=1)
        check_scalar(self.learning_rate, "learning_rate", float, o, min_val=0, include_min=False)
        check_scalar(self.hidden, "hidden", Integral, o, min_val=1)
        check_bool(self.standardize, "standardize", o)
        self._validate_extra()

    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise NotFittedError(f"This {self._name} instance is not fitted yet. Call 'fit' with appropriate "
                                 "arguments before using this estimator.")

    def _prepare(self, x: Any, env: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validate ``x``/``env`` at transform time and map the labels to the codes seen in fit."""
        return check_seen_inputs(x, env, self.env_labels_, self.n_features_in_)

    def _scale(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((x - self.x_mean_) / self.x_scale_, dtype=torch.float32)

    # ------------------------------------------------------------------ fit
    def fit(self, x: Any, env: Any, y: Any = None) -> "BaselineEstimator":
        """Fit the baseline.

        Parameters
        ----------
        x : array_like (N, d)
            Observations.
        env : array_like (N,)
            Environment label of each row (any hashable labels).
        y : ignored

        Returns
        -------
        self
        """
        self._validate_params()
        x = check_array_2d(x, "x")
        codes, labels = check_env(env, x.shape[0], "env")
        n, d = x.shape
        l, e = self.n_latents, len(labels)
        if l > d:
            raise BayesCRLValueError(f"The 'n_latents' parameter of {self._name} must be <= the number of columns "
                                     f"of x ({d}). Got {l} instead.")
        if e < self._min_envs:
            raise BayesCRLValueError(f"The 'env' argument must hold at least {self._min_envs} environments for "
                                     f"{self._name}, whose prior depends on the environment. Got {e}.")
        rng = check_random_state(self.random_state)
        seed = int(rng.integers(2**31 - 1))
        self.x_mean_ = x.mean(0) if self.standardize else np.zeros(d)
        sd = x.std(0) if self.standardize else np.ones(d)
        self.x_scale_ = np.where(sd > 0, sd, 1.0)
        self.n_features_in_ = d
        self.env_labels_ = list(labels)
        self.n_envs_ = e
        xt, et = self._scale(x), torch.as_tensor(codes)
        batch = min(self.batch_size, n)
        losses = np.full(self.num_steps, np.nan)
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            net = self._build(d, e)
            params = [p for p in net.parameters() if p.requires_grad]
            groups = self._param_groups(net)
            opt = torch.optim.Adam([{"params": g["params"], "lr": self.learning_rate * g.get("lr_scale", 1.0)}
                                    for g in groups], lr=self.learning_rate)
            order, pos, bad = torch.randperm(n, generator=gen), 0, 0
            for step in range(self.num_steps):
                if pos + batch > n:
                    order, pos = torch.randperm(n, generator=gen), 0
                idx = order[pos:pos + batch]
                pos += batch
                opt.zero_grad()
                loss = self._loss(net, xt[idx], et[idx], step, gen)
                ok = bool(torch.isfinite(loss))
                if ok:
                    loss.backward()
                    ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)
                if not ok:
                    bad += 1
                    if bad >= self.max_bad_steps:
                        raise NonFiniteLossError(
                            f"{self._name} stopped at step {step}: {bad} consecutive steps gave a non-finite loss "
                            "or gradient (try a smaller learning_rate). Parameters are at the last good step.")
                    continue
                bad = 0
                torch.nn.utils.clip_grad_norm_(params, 100.0)
                opt.step()
                losses[step] = float(loss.detach())
            net.eval()
            with torch.no_grad():
                self._finalise(net, xt, et)
        self.fit_seconds_ = time.perf_counter() - t0
        self.net_ = net
        self.loss_ = losses
        self.latent_names_ = tuple(f"z{i}" for i in range(l))
        return self

    # ------------------------------------------------------------------ outputs
    def transform(self, x: Any, env: Any) -> np.ndarray:
        """Latent point estimates (N, n_latents) (the encoder mean, or the deterministic code)."""
        self._check_fitted()
        x, codes = self._prepare(x, env)
        xt, et = self._scale(x), torch.as_tensor(codes)
        with torch.no_grad():
            out = [self._encode(self.net_, xt[i:i + 8192], et[i:i + 8192]) for i in range(0, len(xt), 8192)]
        return torch.cat(out).numpy().astype(np.float64)

    def fit_transform(self, x: Any, env: Any, y: Any = None) -> np.ndarray:
        """``fit(x, env).transform(x, env)``."""
        return self.fit(x, env).transform(x, env)

    def __repr__(self) -> str:
        return f"{self._name}(n_latents={self.n_latents!r}, random_state={self.random_state!r})"
