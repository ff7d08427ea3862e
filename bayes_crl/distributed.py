"""The fit's main SVI phase on PyTorch Lightning: several processes, GPUs or nodes (``strategy="ddp"``).

Pyro's own Lightning pattern: the ELBO of the same model and guide (:func:`bayes_crl.models.latent_causal_model`,
:func:`bayes_crl.guides.latent_causal_guide`) is the ``training_step`` of a ``LightningModule`` that holds the
network and the edge posterior; every parameter is a torch parameter (no Pyro parameter store), so
DistributedDataParallel sees them all.

How the work is split (``world`` processes):

- **Main phase** (the SVI steps after the warm-ups, most of a fit): each step's minibatch is the one a
  single-process fit with the same seed would draw, split across the processes (``batch_size / world`` rows
  each). The observation plate keeps the full data size ``N``, so each process's loss is an unbiased estimate
  of the full negative ELBO, and the average of the processes' gradients, which DDP computes, is the gradient
  of the single-process loss on the whole minibatch (the draws from the guide differ). The replicas start from
  process 0's parameters (DDP broadcasts them) and stay equal.
- **The stages between and after the main-phase segments** (the recheck at ``recheck_frac``: sparse unmixing,
  order search, centring and a fresh edge posterior; the final identification and the
  refit of the latent model; the estimator's posterior summary) need all the (bounded, ``MAX_SEARCH_ROWS``)
  search rows at once: they run in process 0 only, and their result (parameters, slot order, diagnostics,
  summaries) is broadcast to the others (:meth:`LightningSteps.once`, :func:`bayes_crl.stages.run_once`), so
  every process ends with process 0's model whatever its own floating point would have given.
- **The warm-ups** run before the first segment starts the processes' group, in every process with the same seed
  (every process computes the same warm-ups and the same first identification).

Lightning is an optional dependency (``pip install 'bayes-crl[distributed]'``); install it after torch so that
pip keeps the torch already present.

Example (a script; Lightning starts the other processes by running it again)::

    from bayes_crl import LatentCausalModel
    from bayes_crl.distributed import LightningSteps
    m = LatentCausalModel(n_latents=5).fit(x, env, main_phase=LightningSteps(devices=4, strategy="ddp"))
"""
from __future__ import annotations

import math

import numpy as np
import torch

try:
    import lightning as L
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("bayes_crl.distributed needs PyTorch Lightning: pip install 'bayes-crl[distributed]' "
                      "(or pip install lightning, after torch)") from err
from pyro.infer import Trace_ELBO

from bayes_crl.guides import latent_causal_guide
from bayes_crl.models import latent_causal_model
from bayes_crl.stages import NonFiniteLossError, _next_minibatch

__all__ = ["LightningSteps", "SVIModule"]


class _Minibatches(torch.utils.data.IterableDataset):
    """The run's own minibatch sequence (:func:`bayes_crl.stages._next_minibatch`), split across processes.

    Every process holds the same run state, so every process draws the same global minibatch of ``batch_size``
    rows; process ``r`` of ``world`` keeps rows ``r, r + world, ...`` of it. Together the processes see exactly
    the minibatches of a single-process fit with the same seed, and the run's row order advances as it would.
    """

    def __init__(self, ctx, run, n_steps: int):
        self.ctx, self.run, self.n_steps = ctx, run, n_steps

    def __iter__(self):
        dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if dist_on else 0
        world = torch.distributed.get_world_size() if dist_on else 1
        for _ in range(self.n_steps):
            idx = _next_minibatch(self.run, self.ctx.n, self.ctx.cfg.batch_size)
            mine = idx[rank::world]
            yield self.ctx.x[mine], self.ctx.env[mine], mine


class SVIModule(L.LightningModule):
    """The main phase's negative ELBO as a ``LightningModule``.

    Parameters
    ----------
    net : LatentCausalNet
    global_guide : GlobalGuide
    prior : EdgePrior
    noise : NoiseFamily
    n_total : int
        Rows in the full data set (the observation plate's size).
    lr : float
        Peak learning rate; cosine decay to 10 % over ``schedule`` (first step, total steps of the main phase).
    schedule : tuple of int
        ``(offset, length)``: this segment's first step counted from the start of the main phase, and the main
        phase's length, so a segment continues the single-process schedule.
    """

    def __init__(self, net, global_guide, prior, noise, n_total: int, lr: float, schedule: tuple[int, int]):
        super().__init__()
        self.net, self.global_guide = net, global_guide
        self.prior, self.noise, self.n_total, self.lr = prior, noise, int(n_total), float(lr)
        self.offset, self.length = schedule
        self.elbo = Trace_ELBO()
        self.step_losses: list[float] = []

    def training_step(self, batch, batch_idx):
        x, env, idx = batch
        loss = self.elbo.differentiable_loss(latent_causal_model, latent_causal_guide, x, env, net=self.net,
                                             prior=self.prior, noise=self.noise, n_total=self.n_total,
                                             subsample=idx, global_guide=self.global_guide) / self.n_total
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"The negative ELBO of main-phase step {self.offset + batch_idx} on process "
                                     f"{self.global_rank} is not finite ({loss.item()}); lower the learning rate "
                                     "or set min_obs_scale > 0.")
        self.step_losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.lr, betas=(0.9, 0.999))

        def factor(k: int) -> float:
            frac = (self.offset + k) / max(1, self.length)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor),
                                                   "interval": "step"}}


class LightningSteps:
    """A main phase for :func:`bayes_crl.infer.fit_svi` (``main_phase=``) that runs on PyTorch Lightning.

    Parameters
    ----------
    devices : int, default 1
        Processes (or GPUs) per node.
    num_nodes : int, default 1
    strategy : str, default "ddp"
        Lightning's strategy (``"ddp"``: one process per device, started by re-running the script).
    accelerator : str, default "cpu"
        ``"cpu"``, ``"gpu"`` or ``"auto"``.
    **trainer_kwargs
        Passed to ``lightning.Trainer`` (for example ``precision``, ``logger``).
    """

    def __init__(self, devices: int = 1, num_nodes: int = 1, strategy: str = "ddp", accelerator: str = "cpu",
                 **trainer_kwargs):
        for name, v in (("devices", devices), ("num_nodes", num_nodes)):
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"The '{name}' argument of LightningSteps must be an int >= 1. Got {v!r} instead.")
        self.devices, self.num_nodes, self.strategy, self.accelerator = devices, num_nodes, strategy, accelerator
        self.trainer_kwargs = trainer_kwargs
        self.world_size = devices * num_nodes
        self._strategy = None  # the strategy of the last segment: its process group serves once()

    def once(self, fn):
        """Run ``fn()`` in process 0 and broadcast its return value to every process.

        Returns ``(value, ran_here)``: ``ran_here`` is True in the process that ran ``fn``. Before the first
        segment (no process group yet) or with a single process, ``fn`` runs here.
        """
        strategy = self._strategy
        if strategy is None or strategy.world_size == 1:
            return fn(), True
        here = strategy.global_rank == 0
        value = fn() if here else None
        return strategy.broadcast(value, src=0), here

    def __call__(self, ctx, run, steps: range, losses: np.ndarray) -> None:
        cfg = ctx.cfg
        if cfg.batch_size % self.world_size:
            raise ValueError(f"The 'batch_size' ({cfg.batch_size}) must be a multiple of the number of processes "
                             f"({self.world_size}): each process draws batch_size / processes rows per step.")
        module = SVIModule(run.net, run.gg, ctx.prior, ctx.noise, ctx.n, cfg.lr,
                           (steps.start - ctx.warm, cfg.num_steps - ctx.warm))
        loader = torch.utils.data.DataLoader(_Minibatches(ctx, run, len(steps)), batch_size=None)
        kw = dict(max_steps=len(steps), gradient_clip_val=100.0, enable_checkpointing=False, logger=False,
                  use_distributed_sampler=False,
                  enable_progress_bar=bool(ctx.bar is not None), enable_model_summary=False)
        kw.update(self.trainer_kwargs)
        strategy = self.strategy
        if strategy == "ddp":  # some parameters (e.g. the gamma noise shape) take no part in every model
            from lightning.pytorch.strategies import DDPStrategy

            strategy = DDPStrategy(find_unused_parameters=True)
        trainer = L.Trainer(devices=self.devices, num_nodes=self.num_nodes, strategy=strategy,
                            accelerator=self.accelerator, **kw)
        trainer.fit(module, loader)
        module.to(ctx.device)  # back to the fit's device for the stages after the main phase
        got = np.asarray(module.step_losses[:len(steps)])
        losses[steps.start:steps.start + len(got)] = got
        self._strategy = trainer.strategy
        ctx.order = tuple(trainer.strategy.broadcast(list(ctx.order), src=0))
        if ctx.bar is not None:
            ctx.bar.update(len(steps))
