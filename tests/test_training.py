"Training: loss falls toward the optimum, caching, exact resume, clear errors on bad configs and artifacts."
import json
import numpy as np
import pytest
import torch
from sfp_nb import training
from sfp_nb.training import (ArtifactError, TrainConfig, build_model, evaluate, make_process, model_inputs, train,
                             train_or_load, load_model, default_config)
from sfp_nb.core import artifact_dir

TINY = TrainConfig(process="z1r", n_layers=1, d_model=32, n_heads=2, d_mlp=64, batch_size=64, steps=300,
                   warmup_steps=20, eval_sequences=512, checkpoint_every=40, log_every=10)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_HOME", str(tmp_path))
    return tmp_path


def test_training_lowers_loss_toward_optimum(home):
    process = make_process("z1r")
    tokens = process.sample(512, TINY.seq_len, seed=123)
    before = evaluate(build_model(TINY), process, tokens)
    model, report = train_or_load(TINY, progress=False, threads=1)
    after = evaluate(model, process, tokens)
    assert before["gap"] > 0.2
    assert after["gap"] < 0.05 and after["gap"] < before["gap"] / 5
    assert abs(after["optimal_loss"] - before["optimal_loss"]) < 1e-12   # same tokens, same optimum
    h = np.asarray(report["history"])
    assert h[-5:, 1].mean() < h[:5, 1].mean() - 0.2


def test_cached_model_is_returned_without_retraining(home, monkeypatch):
    cfg = TrainConfig(**{**TINY.__dict__, "steps": 30})
    m1, r1 = train_or_load(cfg, progress=False, threads=1)
    monkeypatch.setattr(training, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    m2, r2 = train_or_load(cfg)
    assert r1["sha256"] == r2["sha256"] and not m2.training
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path, monkeypatch):
    cfg = TrainConfig(**{**TINY.__dict__, "steps": 100})
    monkeypatch.setenv("SFP_HOME", str(tmp_path / "a"))
    full, r_full = train_or_load(cfg, progress=False, threads=1)
    monkeypatch.setenv("SFP_HOME", str(tmp_path / "b"))
    train(cfg, until=53, progress=False, threads=1)     # "interrupted" after 53 steps (last checkpoint at 53)
    assert (artifact_dir("model", cfg) / "checkpoint.safetensors").exists()
    resumed, r_res = train_or_load(cfg, progress=False, threads=1)
    assert not (artifact_dir("model", cfg) / "checkpoint.safetensors").exists()
    for a, b in zip(full.parameters(), resumed.parameters()): assert torch.equal(a, b)
    assert r_full["history"] == r_res["history"] and r_full["model_loss"] == r_res["model_loss"]


def test_corrupt_or_mismatched_artifacts_raise(home):
    cfg = TrainConfig(**{**TINY.__dict__, "steps": 10})
    train_or_load(cfg, progress=False, threads=1)
    folder = artifact_dir("model", cfg)
    w = folder / "model.safetensors"
    data = bytearray(w.read_bytes()); data[-3] ^= 0xFF; w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"): load_model(cfg)
    w.write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError): load_model(cfg)
    model, _ = train_or_load(cfg, retrain=True, progress=False, threads=1)   # retraining repairs it
    stored = json.loads((folder / "config.json").read_text()); stored["seed"] = 99
    (folder / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ArtifactError, match="another config"): train_or_load(cfg)


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ValueError, match="d_vocab=2 is too small"): build_model(TrainConfig(process="z1r", d_vocab=2))
    with pytest.raises(ValueError, match="too small"): build_model(TrainConfig(process="z1r_x_z1r", d_vocab=4))
    with pytest.raises(ValueError, match="longer than the model's context"): build_model(TrainConfig(seq_len=20, n_ctx=16))
    with pytest.raises(ValueError, match="known processes"): make_process("z2r")
    with pytest.raises(ValueError, match="normalization"): build_model(TrainConfig(normalization="BN"))


def test_positions_and_optimal_loss():
    process = make_process("z1r_x_z1r")
    tokens = process.sample(64, 12, seed=0)
    x = model_inputs(tokens, process)
    assert (x[:, 0] == process.vocab_size).all() and torch.equal(x[:, 1:], torch.as_tensor(tokens[:, :-1]))
    ev = evaluate(build_model(TrainConfig()), process, tokens)
    assert np.isclose(ev["optimal_loss"], -process.log_prob(tokens).sum() / tokens.size)
    assert np.isclose(np.mean(ev["optimal_loss_per_position"]), ev["optimal_loss"])


def test_default_config_is_budget_sized(monkeypatch):
    monkeypatch.setenv("SFP_BUDGET", "full")
    assert default_config("pp_z1r_sfp") == TrainConfig(process="pp_z1r_sfp")
    monkeypatch.setenv("SFP_BUDGET", "smoke")
    assert default_config("pp_z1r_sfp").steps < TrainConfig().steps


def _train_in_subprocess(home: str, steps: int) -> str:
    import os
    os.environ["SFP_HOME"] = home
    from sfp_nb.training import TrainConfig, train_or_load
    return train_or_load(TrainConfig(**{**TINY.__dict__, "steps": steps}), progress=False, threads=1)[1]["sha256"]


def test_concurrent_callers_share_one_training_run(home):
    "Notebooks tested in parallel ask for the same model: one trains, the other waits and loads it."
    import concurrent.futures, multiprocessing
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        shas = list(pool.map(_train_in_subprocess, [str(home)] * 2, [60] * 2))
    assert shas[0] == shas[1]
    cfg = TrainConfig(**{**TINY.__dict__, "steps": 60})
    assert load_model(cfg)[1]["sha256"] == shas[0]
