"""Tests for bayes_crl.persistence: checkpoints and saved models round-trip exactly, damage is detected,
nothing is ever unpickled."""
import json
import math
import pickle
import random

import numpy as np
import pytest
import torch

from bayes_crl import LatentCausalModel, SpikeAndSlab, simulate_latent_anm
from bayes_crl._errors import NotFittedError
from bayes_crl._validation import BayesCRLValueError
from bayes_crl.persistence import (
    MANIFEST_NAME,
    MODEL_JSON_NAME,
    MODEL_TENSOR_NAME,
    CheckpointError,
    flatten_state,
    from_json,
    load_model,
    read_checkpoint,
    restore_training_state,
    rng_state_from_json,
    rng_state_to_json,
    save_model,
    save_training_state,
    to_json,
    unflatten_state,
    write_checkpoint,
)


# -- helpers ------------------------------------------------------------------------------------------
def _module_and_adam(seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.8, 0.99))
    return net, opt


def _adam_steps(net, opt, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(7, 3, generator=g)
        opt.zero_grad()
        net(x).pow(2).sum().backward()
        opt.step()


def _tensor_file(d):
    return d / json.loads((d / MANIFEST_NAME).read_text())["tensor_file"]


def _small_checkpoint(d):
    return write_checkpoint(d, tensors={"a": torch.arange(12.0).reshape(3, 4), "b": torch.ones(50)},
                            meta={"step": 3, "seed": 7})


# -- tagged JSON ---------------------------------------------------------------------------------------
def test_to_json_round_trip_of_awkward_values():
    obj = {"t": (1, "a", (2.5,)), "nan": math.nan, "inf": -math.inf, 3: "int key", "__tuple__": 1,
           "b": b"\x00\x80", "arr": np.arange(4, dtype=np.int16), "npint": np.int64(5), "flag": np.bool_(True)}
    enc = to_json(obj)
    json.dumps(enc, allow_nan=False)  # plain JSON
    dec = from_json(json.loads(json.dumps(enc)))
    assert dec["t"] == (1, "a", (2.5,)) and isinstance(dec["t"][2], tuple)
    assert math.isnan(dec["nan"]) and dec["inf"] == -math.inf
    assert dec[3] == "int key" and dec["__tuple__"] == 1 and dec["b"] == b"\x00\x80"
    np.testing.assert_array_equal(dec["arr"], obj["arr"])
    assert dec["arr"].dtype == np.int16 and type(dec["npint"]) is int and dec["flag"] is True


def test_to_json_refuses_unknown_types_naming_the_path():
    with pytest.raises(BayesCRLValueError, match="cfg/fn"):
        to_json({"fn": len}, prefix="cfg")


def test_write_checkpoint_requires_plain_json_meta(tmp_path):
    with pytest.raises(BayesCRLValueError, match="to_json"):
        write_checkpoint(tmp_path / "c", tensors={}, meta={"order": {1, 2}})
    assert not (tmp_path / "c").exists()


# -- checkpoints ---------------------------------------------------------------------------------------
def test_checkpoint_round_trip_module_and_adam_is_bitwise(tmp_path):
    net, opt = _module_and_adam()
    _adam_steps(net, opt, 3, seed=1)
    tensors, meta_part = flatten_state({"net": net.state_dict()}, opt.state_dict())
    write_checkpoint(tmp_path / "ck", tensors=tensors, meta={**meta_part, "step": 3, "seed": 0})
    t2, meta = read_checkpoint(tmp_path / "ck")
    assert meta["step"] == 3 and meta["seed"] == 0
    sds, osd = unflatten_state(t2, meta)

    net2, opt2 = _module_and_adam(seed=123)  # different initial values
    net2.load_state_dict(sds["net"])
    opt2.load_state_dict(osd)
    for k, v in net.state_dict().items():
        assert torch.equal(v, net2.state_dict()[k])
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]  # betas come back as a tuple
    for pid, st in a["state"].items():
        assert set(st) == {"step", "exp_avg", "exp_avg_sq"}
        for key, v in st.items():
            assert torch.equal(v, b["state"][pid][key]) and v.dtype == b["state"][pid][key].dtype

    _adam_steps(net, opt, 4, seed=2)
    _adam_steps(net2, opt2, 4, seed=2)
    for p, q in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_save_restore_training_state_continues_identically(tmp_path):
    net, opt = _module_and_adam()
    gen = torch.Generator().manual_seed(5)
    _adam_steps(net, opt, 2, seed=1)
    torch.randn(3, generator=gen)
    perm = torch.randperm(10, generator=gen)
    save_training_state(tmp_path / "ck", modules={"net": net}, optimizer=opt, generators={"rows": gen},
                        tensors={"perm": perm}, meta={"step": 2, "order": (1, 0), "loss": math.nan})
    expected_global = torch.rand(3)
    expected_rows = torch.rand(3, generator=gen)
    expected_np, expected_py = np.random.random(), random.random()

    net2, opt2 = _module_and_adam(seed=9)
    gen2 = torch.Generator().manual_seed(99)
    extra_t, extra_meta = restore_training_state(tmp_path / "ck", modules={"net": net2}, optimizer=opt2,
                                                 generators={"rows": gen2})
    assert torch.equal(extra_t["perm"], perm)
    assert extra_meta["step"] == 2 and extra_meta["order"] == (1, 0) and math.isnan(extra_meta["loss"])
    assert torch.equal(torch.rand(3), expected_global)
    assert torch.equal(torch.rand(3, generator=gen2), expected_rows)
    assert np.random.random() == expected_np and random.random() == expected_py
    _adam_steps(net, opt, 3, seed=4)
    _adam_steps(net2, opt2, 3, seed=4)
    for p, q in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_restore_training_state_refuses_other_configuration(tmp_path):
    net, opt = _module_and_adam()
    save_training_state(tmp_path / "ck", modules={"net": net}, optimizer=opt)
    other = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    with pytest.raises(CheckpointError, match="does not fit"):
        restore_training_state(tmp_path / "ck", modules={"net": other}, restore_global_rng=False)
    with pytest.raises(CheckpointError, match="holds modules"):
        restore_training_state(tmp_path / "ck", modules={"encoder": net}, restore_global_rng=False)


def test_rng_state_json_round_trip_with_numpy_generator():
    gens = {"t": torch.Generator().manual_seed(1), "n": np.random.default_rng(3)}
    state = json.loads(json.dumps(rng_state_to_json(gens), allow_nan=False))
    a = (torch.rand(2), torch.rand(2, generator=gens["t"]), gens["n"].random(3), np.random.random(), random.random())
    restored = rng_state_from_json(state)
    b = (torch.rand(2), torch.rand(2, generator=restored["t"]), restored["n"].random(3), np.random.random(),
         random.random())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[3:] == b[3:]
    np.testing.assert_array_equal(a[2], b[2])


def test_rewrite_keeps_one_tensor_file_and_reads_latest(tmp_path):
    d = tmp_path / "ck"
    write_checkpoint(d, tensors={"w": torch.zeros(3)}, meta={"step": 1})
    write_checkpoint(d, tensors={"w": torch.ones(3)}, meta={"step": 2})
    tensors, meta = read_checkpoint(d)
    assert meta["step"] == 2 and torch.equal(tensors["w"], torch.ones(3))
    assert len(list(d.glob("*.safetensors"))) == 1
    assert not list(d.glob(".*.tmp"))


def test_truncated_tensor_file_is_refused(tmp_path):
    d = tmp_path / "ck"
    _small_checkpoint(d)
    f = _tensor_file(d)
    f.write_bytes(f.read_bytes()[:-20])
    with pytest.raises(CheckpointError, match="truncated") as info:
        read_checkpoint(d)
    assert "SHA-256" in str(info.value)


def test_altered_byte_is_refused(tmp_path):
    d = tmp_path / "ck"
    _small_checkpoint(d)
    f = _tensor_file(d)
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="altered.*SHA-256"):
        read_checkpoint(d)


def test_unknown_format_version_is_refused(tmp_path):
    d = tmp_path / "ck"
    _small_checkpoint(d)
    doc = json.loads((d / MANIFEST_NAME).read_text())
    doc["format_version"] = 99
    (d / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="format_version 99.*newer"):
        read_checkpoint(d)


def test_missing_pieces_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no 'manifest.json'"):
        read_checkpoint(tmp_path / "empty")
    d = tmp_path / "ck"
    _small_checkpoint(d)
    _tensor_file(d).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        read_checkpoint(d)
    (d / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid checkpoint"):
        read_checkpoint(d)


# -- saved models --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    data = simulate_latent_anm(n_latents=2, n_envs=6, n_per_env=40, n_obs_dims=4, random_state=0)
    env = np.array([f"site {e}" for e in data.env])
    model = LatentCausalModel(n_latents=2, num_steps=20, random_state=0, num_posterior_samples=50)
    model.fit(data.x, env)
    return model, data.x, env


def test_save_load_round_trip_is_exact(fitted, tmp_path):
    model, x, env = fitted
    path = save_model(model, tmp_path / "m.bcrl")
    assert {p.name for p in (tmp_path / "m.bcrl").iterdir()} == {MODEL_JSON_NAME, MODEL_TENSOR_NAME}
    state = torch.random.get_rng_state()
    loaded = load_model(path, LatentCausalModel)
    assert torch.equal(torch.random.get_rng_state(), state)  # loading does not consume the caller's RNG
    np.testing.assert_array_equal(loaded.transform(x, env), model.transform(x, env))
    for name in ("edge_inclusion_", "edge_orientation_", "edge_weight_", "_weight_draws", "x_mean_", "x_scale_",
                 "loss_"):
        a, b = getattr(model, name), getattr(loaded, name)
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert loaded.env_labels_ == model.env_labels_ and all(isinstance(v, str) for v in loaded.env_labels_)
    assert loaded.latent_names_ == model.latent_names_ and isinstance(loaded.latent_names_, tuple)
    assert loaded.n_features_in_ == model.n_features_in_ and loaded.n_envs_ == model.n_envs_
    assert loaded.fit_seconds_ == model.fit_seconds_ and loaded.order_ == model.order_
    assert loaded.loss_ is loaded.result_.losses
    assert loaded.result_.prior == model.result_.prior and loaded.result_.noise == model.result_.noise
    assert repr(loaded) == repr(model) and loaded.num_steps == 20 and loaded.random_state == 0
    # the orientation draws travel with the model: the most probable graphs are the same after loading
    for key in ("order_draws", "env_draws", "snr_env", "env_weight"):
        assert torch.equal(loaded._inclusion_context[key], model._inclusion_context[key])
    before = [(sorted(g.edges), mass) for g, mass in model.most_probable_graphs(3)]
    assert [(sorted(g.edges), mass) for g, mass in loaded.most_probable_graphs(3)] == before
    np.testing.assert_array_equal(loaded.sample_posterior(20, seed=1)["weight"],
                                  model.sample_posterior(20, seed=1)["weight"])


def test_edge_prior_instance_and_tuple_labels_round_trip(fitted, tmp_path):
    model, _, _ = fitted
    model.edge_prior = SpikeAndSlab(prior_inclusion=0.25)
    model.env_labels_ = [("a", 1), 2, "three", 4.5]
    try:
        loaded = load_model(save_model(model, tmp_path / "m"), LatentCausalModel)
    finally:
        model.edge_prior, model.env_labels_ = "horseshoe", [f"site {e}" for e in range(6)]
    assert loaded.edge_prior == SpikeAndSlab(prior_inclusion=0.25)
    assert loaded.env_labels_ == [("a", 1), 2, "three", 4.5]
    assert isinstance(loaded.env_labels_[0], tuple) and isinstance(loaded.env_labels_[1], int)


def test_save_refuses_to_overwrite(fitted, tmp_path):
    model, x, env = fitted
    target = tmp_path / "m"
    save_model(model, target)
    with pytest.raises(FileExistsError, match="overwrite=True") as info:
        save_model(model, target)
    assert str(target) in str(info.value)
    save_model(model, target, overwrite=True)
    np.testing.assert_array_equal(load_model(target, LatentCausalModel).transform(x, env), model.transform(x, env))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary or backup directories left

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="does not hold a saved model"):
        save_model(model, other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    save_model(model, tmp_path / "empty")  # an empty directory is fine


def test_save_unfitted_raises():
    with pytest.raises(NotFittedError, match="not fitted"):
        save_model(LatentCausalModel(), "unused")


def test_load_model_detects_altered_tensor_file(fitted, tmp_path):
    model, _, _ = fitted
    path = tmp_path / "m"
    save_model(model, path)
    f = path / MODEL_TENSOR_NAME
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model(path, LatentCausalModel)


# -- pickles are never loaded --------------------------------------------------------------------------
class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", ["path", "tensor_file", "tensor_file_rehashed", "json"])
def test_pickle_payload_is_refused_and_never_executed(fitted, tmp_path, where):
    model, _, _ = fitted
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Payload(marker))
    path = tmp_path / "m.bcrl"
    if where == "path":
        path.write_bytes(payload)
        match = "pickle"
    else:
        save_model(model, path)
        if where == "json":
            (path / MODEL_JSON_NAME).write_bytes(payload)
            match = "pickle"
        else:
            (path / MODEL_TENSOR_NAME).write_bytes(payload)
            match = "SHA-256|truncated"
            if where == "tensor_file_rehashed":  # even with a matching hash the bytes go to safetensors only
                import hashlib

                doc = json.loads((path / MODEL_JSON_NAME).read_text())
                doc["sha256"], doc["size"] = hashlib.sha256(payload).hexdigest(), len(payload)
                (path / MODEL_JSON_NAME).write_text(json.dumps(doc))
                match = "not a valid safetensors"
    with pytest.raises(CheckpointError, match=match):
        load_model(path, LatentCausalModel)
    assert not marker.exists()


def test_fit_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    """A fit stopped after a checkpoint and resumed ends with the same parameters as one run straight through."""
    import torch

    from bayes_crl import simulate_latent_anm
    from bayes_crl.infer import fit_svi
    from bayes_crl.noise import get_noise_family
    from bayes_crl.priors import get_prior

    d = simulate_latent_anm(n_latents=2, n_envs=6, n_per_env=40, n_obs_dims=4, random_state=0)
    x, env = torch.tensor(d.x, dtype=torch.float32), torch.tensor(d.env)
    kw = dict(n_latents=2, n_envs=6, prior=get_prior("horseshoe"), noise=get_noise_family("gaussian"),
              num_steps=40, batch_size=64, seed=5, warmup_frac=0.3)
    full = fit_svi(x, env, **kw)
    ck = str(tmp_path / "ck")
    fit_svi(x, env, **{**kw, "num_steps": 40}, checkpoint_dir=ck, checkpoint_every=20)  # writes at step 20
    # simulate a crash after the step-20 checkpoint: resume from it
    resumed = fit_svi(x, env, **kw, checkpoint_dir=ck, checkpoint_every=20, resume=True)
    for a, b in zip(full.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.global_guide.state_dict().values(), resumed.global_guide.state_dict().values()):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(full.losses, resumed.losses)
    assert full.order == resumed.order
