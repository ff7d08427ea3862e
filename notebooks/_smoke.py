"""Execute the notebooks with nbclient, shrunk (``BAYES_CRL_SMOKE=1``) or in full.

Usage::

    python notebooks/_smoke.py                       # every notebook, smoke mode, outputs discarded
    python notebooks/_smoke.py 02_comparing_priors   # one notebook
    python notebooks/_smoke.py --full --inplace      # full sizes, outputs written back into the .ipynb files

The kernel is the ``python3`` kernelspec; its command ``python`` is resolved by jupyter_client to the
interpreter running this script (``sys.executable``), so run it with the project's virtual environment.
``tests/test_notebooks.py`` uses :func:`run_notebook`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["NOTEBOOKS_DIR", "notebook_paths", "run_notebook", "main"]

NOTEBOOKS_DIR = Path(__file__).resolve().parent


def notebook_paths() -> list[Path]:
    """The notebooks, in order (files ``[0-9][0-9]_*.ipynb`` in this folder)."""
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(path: str | os.PathLike, *, smoke: bool = True, timeout: int = 300, kernel_name: str = "python3"):
    """Execute one notebook and return it with its outputs.

    Parameters
    ----------
    path : str or path-like
    smoke : bool, default True
        Set ``BAYES_CRL_SMOKE=1`` (and ``MPLBACKEND=Agg``) in the kernel's environment.
    timeout : int, default 300
        Seconds allowed per cell.
    kernel_name : str, default "python3"

    Returns
    -------
    nbformat.NotebookNode

    Raises
    ------
    nbclient.exceptions.CellExecutionError
        When a cell raises (the message shows the cell and the traceback).
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env["BAYES_CRL_SMOKE"] = "1" if smoke else "0"
    env.setdefault("MPLBACKEND", "Agg")
    if smoke:
        env.setdefault("OMP_NUM_THREADS", "1")
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)  # forwarded to the kernel manager's start_kernel
    return nb


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks named on the command line (default: all); 0 when all ran."""
    import nbformat

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="notebook names (with or without .ipynb); default: all")
    p.add_argument("--full", action="store_true", help="full sizes instead of BAYES_CRL_SMOKE=1")
    p.add_argument("--inplace", action="store_true", help="write the executed notebooks (with outputs) back")
    p.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300; use more with --full)")
    a = p.parse_args(argv)
    paths = notebook_paths()
    if a.names:
        wanted = {n.removesuffix(".ipynb") for n in a.names}
        paths = [q for q in paths if q.stem in wanted]
        missing = wanted - {q.stem for q in paths}
        if missing:
            print(f"error: no notebook named {sorted(missing)} in {NOTEBOOKS_DIR}", file=sys.stderr)
            return 2
    for q in paths:
        t0 = time.perf_counter()
        nb = run_notebook(q, smoke=not a.full, timeout=a.timeout)
        print(f"{q.name}: ok in {time.perf_counter() - t0:.1f} s")
        if a.inplace:
            nbformat.write(nb, q)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
