"""Peak memory of a fit against the number of rows, with the observations in memory or in a memory-mapped ``.npy``
file (read on demand, :mod:`bayes_crl.rows`).

    python benchmarks/memory.py --rows 1000000 10000000 --source memmap --steps 300 --dir runs/memory
    python benchmarks/memory.py --rows 100000 1000000 --source memory --steps 300

Each size runs in a fresh subprocess: 3 latents, 10 observed float32 columns, 50 environments, ``num_steps``
steps, one warm-up (``n_restarts=1``), the default posterior summary. Reported: the peak resident memory of the
process (``ru_maxrss``), that before the fit (Python, torch, the environment labels and, for ``memory``, x
itself), the size of x, and the fit's seconds. With ``memmap`` the data file is written in chunks into ``--dir``
(kept for reruns) and opened with ``numpy.load(path, mmap_mode="r")``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, resource, sys, time, warnings
import numpy as np, torch
torch.set_num_threads(1)
from bayes_crl import LatentCausalModel
n, steps, source, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
envs, d = 50, 10
env = np.repeat(np.arange(envs, dtype=np.int64), n // envs)

def block(start, stop):
    rng = np.random.default_rng(start)
    return rng.normal(size=(stop - start, d)).astype(np.float32) * (1 + env[start:stop, None] % 5)

if source == "memmap":
    path = os.path.join(folder, f"x_{n}.npy")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        out = np.lib.format.open_memmap(path + ".part", mode="w+", dtype=np.float32, shape=(len(env), d))
        for s in range(0, len(env), 1_000_000):
            out[s:s + 1_000_000] = block(s, min(s + 1_000_000, len(env)))
        out.flush(); del out
        os.replace(path + ".part", path)
    x = np.load(path, mmap_mode="r")
else:
    x = block(0, len(env))
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
    ap.add_argument("--source", choices=["memory", "memmap"], default="memory")
    ap.add_argument("--dir", default=os.path.join("runs", "memory"), help="folder of the memory-mapped data files")
    a = ap.parse_args(argv)
    print(f"source: {a.source}")
    print("| rows | x (MB) | RSS before fit (MB) | peak RSS (MB) | peak - before (MB) | fit s |")
    print("|---|---|---|---|---|---|")
    for n in a.rows:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(a.steps), a.source, a.dir],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"| {r['rows']:,} | {r['x_mb']:.0f} | {r['rss_before_fit_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r['peak_rss_mb'] - r['rss_before_fit_mb']:.0f} | {r['seconds']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
