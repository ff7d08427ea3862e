"""Tests for bayes_crl.cli: simulate -> fit -> report round trips on .npz and .csv, and clean failures."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from bayes_crl import LatentCausalModel
from bayes_crl.cli import main, read_datatree

TINY_FIT = ["--latents", "3", "--steps", "20", "--restarts", "1", "--posterior-samples", "60", "--loglik-rows", "40",
            "--no-progress"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sim_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "sim.npz"
    rc = main(["simulate", "--latents", "3", "--envs", "8", "--rows-per-env", "40", "--obs-dims", "5",
               "--seed", "0", "--out", str(path)])
    assert rc == 0
    return path


@pytest.fixture(scope="module")
def npz_run(sim_path, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "npz_run"
    rc = main(["fit", str(sim_path), *TINY_FIT, "--seed", "0", "--out", str(run)])
    assert rc == 0
    return run


def _assert_one_line_error(err: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err


def test_simulate_writes_loadable_data(sim_path, capsys):
    from bayes_crl.simulate import LatentANMData

    data = LatentANMData.load(sim_path)
    assert data.x.shape == (8 * 40, 5) and data.z.shape == (8 * 40, 3)
    assert data.adjacency.sum() == 2  # chain z0 -> z1 -> z2


def test_simulate_refuses_existing_file(sim_path, capsys):
    rc = main(["simulate", "--envs", "3", "--rows-per-env", "5", "--out", str(sim_path)])
    assert rc == 2
    _assert_one_line_error(capsys.readouterr().err)


def test_fit_npz_round_trip(npz_run, sim_path):
    names = sorted(os.listdir(npz_run))
    assert {"summary.json", "summary.md", "model", "figures"} <= set(names)
    assert "posterior.nc" in names
    import arviz_stats
    import xarray as xr

    with xr.open_datatree(npz_run / "posterior.nc") as opened:  # xarray and ArviZ open it as it is
        assert {"posterior", "log_likelihood", "observed_data", "constant_data"} <= set(opened.children)
        assert opened["posterior"]["edge_weight"].dims[:2] == ("chain", "draw")
        summ = arviz_stats.summary(opened, var_names=["edge_weight"], kind="stats")
        assert len(summ) == 8 * 3 * 3
    s = json.loads((npz_run / "summary.json").read_text())
    assert s["latent_names"] == ["z0", "z1", "z2"]
    p = np.asarray(s["edge_inclusion"])
    assert p.shape == (3, 3) and np.all((p >= 0) & (p <= 1))
    assert np.asarray(s["edge_weight_per_env"]).shape == (8, 3, 3)
    assert s["fit"]["seconds"] > 0 and np.isfinite(s["fit"]["final_loss"])
    assert "summary" in s["identifiability"]
    rec = s["recovery"]  # simulated data: ground truth known
    assert 0 <= rec["mpc"] <= 1 and rec["shd"] >= 0 and "edge_auroc" in rec
    # the saved model reproduces the summary
    model = LatentCausalModel.load(npz_run / "model")
    np.testing.assert_allclose(model.edge_inclusion_, p)
    # the posterior DataTree reads back, with the log-likelihood of the subsample
    dt = read_datatree(npz_run)
    assert {"posterior", "log_likelihood", "fit"} <= set(dt.children)
    assert dt["log_likelihood"]["x"].sizes["obs"] == 40
    assert {"edge_probabilities.png", "graph.png", "latents.png", "loss.png"} <= set(os.listdir(npz_run / "figures"))


def test_fit_csv_round_trip(tmp_path, capsys):
    rng = np.random.default_rng(0)
    csv_path = tmp_path / "obs.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "site", "c", "d"])
        for k in range(6):
            for _ in range(30):
                v = rng.normal(size=4) * (1 + k)
                w.writerow([f"{v[0]:.4f}", f"{v[1]:.4f}", f"site {k}", f"{v[2]:.4f}", f"{v[3]:.4f}"])
    run = tmp_path / "csv_run"
    rc = main(["fit", str(csv_path), "--env-column", "site", *TINY_FIT, "--latents", "2", "--out", str(run)])
    assert rc == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["data"]["n_rows"] == 180 and s["data"]["n_obs_dims"] == 4 and s["data"]["n_envs"] == 6
    assert s["env_labels"] == [f"site {k}" for k in range(6)]
    assert s["recovery"] is None
    assert np.asarray(s["edge_inclusion"]).shape == (2, 2)
    out = capsys.readouterr()
    assert "| parent \\ child | z0 | z1 |" in out.out
    assert "Traceback" not in out.err


def test_refuses_non_empty_run_dir(npz_run, sim_path, capsys):
    before = sorted(os.listdir(npz_run))
    rc = main(["fit", str(sim_path), *TINY_FIT, "--out", str(npz_run)])
    assert rc == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert "--overwrite" in err
    assert sorted(os.listdir(npz_run)) == before


def test_overwrite_replaces_results(sim_path, tmp_path):
    run = tmp_path / "run"
    assert main(["fit", str(sim_path), *TINY_FIT, "--seed", "1", "--out", str(run)]) == 0
    assert main(["fit", str(sim_path), *TINY_FIT, "--seed", "2", "--out", str(run), "--overwrite"]) == 0
    assert json.loads((run / "summary.json").read_text())["settings"]["random_state"] == 2


@pytest.mark.parametrize("argv", [
    ["fit", "does_not_exist.npz", "--out", "{tmp}/r"],
    ["fit", "{tmp}/bad.txt2", "--out", "{tmp}/r"],
    ["fit", "{sim}", "--prior", "horsehoe", "--out", "{tmp}/r"],
    ["fit", "{sim}", "--steps", "0", "--out", "{tmp}/r"],
    ["fit", "{sim}", "--latents", "9", "--steps", "2", "--restarts", "1", "--no-progress", "--out", "{tmp}/r"],
    ["fit", "{sim}", "--device", "tpu", "--steps", "2", "--restarts", "1", "--no-progress", "--out", "{tmp}/r"],
    ["report", "{tmp}/no_run"],
    ["simulate", "--latents", "3", "--obs-dims", "2", "--envs", "3", "--rows-per-env", "5", "--out", "{tmp}/s"],
    [],
])
def test_bad_input_exits_2_with_one_line(argv, tmp_path, sim_path, capsys):
    (tmp_path / "bad.txt2").write_text("x\n")
    argv = [a.format(tmp=tmp_path, sim=sim_path) for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    _assert_one_line_error(captured.err)
    assert not (tmp_path / "r").exists()


def test_report_prints_edge_table(npz_run, capsys):
    os.remove(npz_run / "figures" / "graph.png")
    assert main(["report", str(npz_run)]) == 0
    out = capsys.readouterr().out
    assert "## Edge inclusion probabilities" in out
    assert "| parent \\ child | z0 | z1 | z2 |" in out
    assert "## Recovery" in out and "MPC" in out
    assert (npz_run / "figures" / "graph.png").is_file()  # missing figure re-written


def test_report_damaged_model_exits_2(npz_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(npz_run, run)
    (run / "model" / "model.safetensors").write_bytes(b"not a tensor file")
    assert main(["report", str(run)]) == 2
    _assert_one_line_error(capsys.readouterr().err)


def test_module_entry_point_no_traceback(tmp_path):
    """``python -m bayes_crl.cli`` runs as a program: exit 2 and one line on stderr for a missing file."""
    proc = subprocess.run([sys.executable, "-m", "bayes_crl.cli", "fit", str(tmp_path / "missing.csv"), "--out",
                           str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: data file '{tmp_path / 'missing.csv'}' does not exist."]


def test_fit_a_memory_mapped_npy_with_an_env_file(sim_path, tmp_path, capsys):
    from bayes_crl.simulate import LatentANMData

    data = LatentANMData.load(str(sim_path))
    np.save(tmp_path / "x.npy", data.x.astype(np.float32))
    np.save(tmp_path / "env.npy", data.env)
    run = tmp_path / "npy_run"
    assert main(["fit", str(tmp_path / "x.npy"), "--env-file", str(tmp_path / "env.npy"), *TINY_FIT, "--seed", "0",
                 "--out", str(run)]) == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["data"]["kind"] == "npy (memory-mapped)" and s["data"]["n_rows"] == len(data.x)
    assert np.asarray(s["edge_inclusion"]).shape == (3, 3)
    # without the labels: a one-line error that says what to pass
    assert main(["fit", str(tmp_path / "x.npy"), *TINY_FIT, "--out", str(tmp_path / "r2")]) != 0
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert "--env-file labels.npy" in err
