"""The main SVI phase on PyTorch Lightning (DDP over CPU processes) against the built-in loop.

Each configuration is one default fit (``LatentCausalModel`` with its defaults but ``num_steps``) of a random
graph on the project's simulator, run in its own process tree: the built-in loop, then
``LightningSteps(devices=k)`` for each ``k`` in ``--devices`` (Lightning re-runs the worker script once per
process). Reported per configuration: the main phase's seconds and steps per second (timed around the main
phase alone), rows per second (``batch_size`` rows per step in all), the whole fit's seconds and the MPC of
the latents.

    python benchmarks/distributed.py --latents 5 --rows-per-env 1000 --envs 40 --steps 3000 --devices 1,2 \
        --out benchmarks/results/distributed.md --results benchmarks/results/distributed.jsonl

Cost: one default-length fit per configuration (about 2 minutes each at l = 5 on this machine).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _report import cpu_name, write_report


def worker(a) -> None:
    from bayes_crl import LatentCausalModel, simulate_latent_anm
    from bayes_crl.metrics import mpc
    from bayes_crl.stages import run_steps

    d = simulate_latent_anm(n_latents=a.latents, n_envs=a.envs, n_per_env=a.rows_per_env, graph="random",
                            random_state=0)
    timing = []
    if a.devices:
        from bayes_crl.distributed import LightningSteps

        inner = LightningSteps(devices=a.devices, strategy="ddp", enable_progress_bar=False)
    else:
        inner = run_steps

    def timed(ctx, run, steps, losses):
        t0 = time.perf_counter()
        inner(ctx, run, steps, losses)
        timing.append((len(steps), time.perf_counter() - t0))

    m = LatentCausalModel(n_latents=a.latents, num_steps=a.steps, batch_size=a.batch_size, random_state=0)
    t0 = time.perf_counter()
    m.fit(d.x, d.env, main_phase=timed)
    fit_s = time.perf_counter() - t0
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        steps = sum(n for n, _ in timing)
        secs = sum(s for _, s in timing)
        row = {"config": f"lightning, {a.devices} process(es)" if a.devices else "built-in loop",
               "devices": a.devices, "latents": a.latents, "rows": len(d.x), "batch_size": a.batch_size,
               "main_steps": steps, "main_seconds": secs, "steps_per_s": steps / secs,
               "rows_per_s": steps * a.batch_size / secs, "fit_seconds": fit_s,
               "mpc": float(mpc(d.z, m.transform(d.x, d.env)))}
        with open(a.worker_out, "w") as fh:
            json.dump(row, fh)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latents", type=int, default=5)
    ap.add_argument("--envs", type=int, default=40)
    ap.add_argument("--rows-per-env", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=4500)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--devices", default="1,2", help="comma-separated process counts for Lightning")
    ap.add_argument("--out", default=None)
    ap.add_argument("--results", default=None)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-devices", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker_out is not None:
        a.devices = a.worker_devices
        worker(a)
        return 0
    rows = []
    base = [sys.executable, os.path.abspath(__file__), "--latents", str(a.latents), "--envs", str(a.envs),
            "--rows-per-env", str(a.rows_per_env), "--steps", str(a.steps), "--batch-size", str(a.batch_size)]
    for k in [0] + [int(v) for v in a.devices.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "row.json")
            cmd = base + ["--worker-out", out] + (["--worker-devices", str(k)] if k else [])
            subprocess.run(cmd, check=True, cwd=tmp, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            with open(out) as fh:
                rows.append(json.load(fh))
        print(rows[-1], flush=True)
    ref = rows[0]["steps_per_s"]
    cpu = cpu_name()
    lines = [f"l = {a.latents}, {rows[0]['rows']} rows, batch {a.batch_size} rows per step in all, {a.steps} steps; "
             f"{cpu}, {os.cpu_count()} cores, one torch thread per process.", "",
             "| main phase | steps | seconds | steps / s | rows / s | vs built-in | whole fit s | MPC |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['main_steps']} | {r['main_seconds']:.1f} | {r['steps_per_s']:.1f} | "
                     f"{r['rows_per_s']:.0f} | {r['steps_per_s'] / ref:.2f}x | {r['fit_seconds']:.1f} | "
                     f"{r['mpc']:.3f} |")
    write_report("\n".join(lines), rows, a.out, a.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
