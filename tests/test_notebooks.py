"""The notebooks run end to end in smoke mode (``BAYES_CRL_SMOKE=1``: tiny data, 20 SVI steps).

Executed with nbclient on the ``python3`` kernel, which must be the interpreter running the tests (the
kernelspec's ``python`` is resolved by jupyter_client to ``sys.executable``). Shared logic lives in
``notebooks/_smoke.py``, which also runs them from the command line.
"""
import os
import sys
import types
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_quickstart", "02_comparing_priors", "03_identifiability", "04_interventions"]


def _smoke_module() -> types.ModuleType:
    """``notebooks/_smoke.py`` as a module (executed from source: no ``__pycache__`` in the source tree)."""
    path = ROOT / "notebooks" / "_smoke.py"
    mod = types.ModuleType("bayes_crl_notebook_smoke")
    mod.__file__ = str(path)
    sys.modules[mod.__name__] = mod  # dataclasses/typing look the module up while it executes
    exec(compile(path.read_text(), str(path), "exec"), mod.__dict__)
    return mod


def test_all_notebooks_listed():
    assert [p.stem for p in _smoke_module().notebook_paths()] == NOTEBOOKS


def test_kernel_resolves_to_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.language == "python"
    cmd = KernelManager(kernel_name="python3").format_kernel_cmd()
    assert os.path.realpath(cmd[0]) == os.path.realpath(sys.executable)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_structure(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert 'SMOKE = os.environ.get("BAYES_CRL_SMOKE", "0") == "1"' in code[0].source
    assert "%matplotlib inline" in code[0].source
    # committed with the outputs of a full run (notebooks/_smoke.py --full --inplace): every cell ran, none
    # failed, and the file stays small enough to review
    assert all(c.execution_count is not None for c in code), "commit notebooks executed in full"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert (ROOT / "notebooks" / f"{name}.ipynb").stat().st_size < 1_500_000


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name):
    nb = _smoke_module().run_notebook(ROOT / "notebooks" / f"{name}.ipynb", smoke=True, timeout=300)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "every notebook shows at least one figure"
    # nothing is written into the source tree (editor checkpoints aside)
    extra = {p.name for p in (ROOT / "notebooks").iterdir()} - {f"{n}.ipynb" for n in NOTEBOOKS} - {
        "_smoke.py", ".ipynb_checkpoints"}
    assert not extra
