"""Peak memory of a fit against the number of rows (minibatch SVI streams rows: memory should grow only
with the data array itself, not with the fit).

    python benchmarks/memory.py --rows 100000 1000000 --steps 300

Each size runs in a fresh subprocess; reported: peak RSS of the process (ru_maxrss), the size of x itself,
and peak RSS minus the data, for a fit with ``num_steps`` steps, 1 warm-up (``n_restarts=1``), 3 latents,
10 observed dimensions, 50 environments.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, warnings
import numpy as np, torch
torch.set_num_threads(1)
from bayes_crl import LatentCausalModel
n, steps = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
env = np.repeat(np.arange(50), n // 50)
x = rng.normal(size=(len(env), 10)).astype(np.float32) * (1 + env[:, None] % 5)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    LatentCausalModel(n_latents=3, num_steps=steps, n_restarts=1, random_state=0, num_posterior_samples=100).fit(x, env=env)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": len(env), "peak_rss_mb": peak, "rss_before_fit_mb": base, "x_mb": x.nbytes / 2**20,
                  "seconds": time.perf_counter() - t}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args(argv)
    print("| rows | x (MB) | RSS before fit (MB) | peak RSS (MB) | peak - before (MB) | fit s |")
    print("|---|---|---|---|---|---|")
    for n in a.rows:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(a.steps)], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"| {r['rows']:,} | {r['x_mb']:.0f} | {r['rss_before_fit_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r['peak_rss_mb'] - r['rss_before_fit_mb']:.0f} | {r['seconds']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
