"Training: loss falls toward the optimum, caching, exact resume, fine-tuning, run options, clear errors."
import dataclasses, json
import numpy as np
import pytest
import torch
from sfp_nb import training
from sfp_nb.core import artifact_dir, config_hash
from sfp_nb.interventions import resid, Steer
from sfp_nb.processes import ProcessSpec, make_process, register_loss_mask
from sfp_nb.training import (ArtifactError, RunOptions, TrainConfig, masked_ce, build_model, evaluate,
                             finetune_config, load_model, model_inputs, model_log_probs, train, train_or_load)

TINY = TrainConfig(process="z1r", n_layers=1, d_model=32, n_heads=2, d_mlp=64, batch_size=64, steps=300, warmup_steps=20)
QUIET = RunOptions(threads=1, progress=False, eval_sequences=512, checkpoint_every=40)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path


def test_training_lowers_loss_toward_optimum(home):
    process = make_process("z1r")
    tokens = process.sample(512, TINY.seq_len, seed=123)
    before = evaluate(build_model(TINY), process, tokens)
    model, report = train_or_load(TINY, QUIET)
    after = evaluate(model, process, tokens)
    assert before["gap"] > 0.2
    assert after["gap"] < 0.05 and after["gap"] < before["gap"] / 5
    assert abs(after["optimal_loss"] - before["optimal_loss"]) < 1e-12   # same tokens, same optimum
    h = np.asarray(report["history"])
    assert h[-5:, 1].mean() < h[:5, 1].mean() - 0.2


def test_cached_model_is_returned_without_retraining_whatever_the_run_options(home, monkeypatch):
    cfg = dataclasses.replace(TINY, steps=30)
    m1, r1 = train_or_load(cfg, QUIET)
    monkeypatch.setattr(training, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    for run in (RunOptions(), RunOptions(threads=2, log_every=1, eval_sequences=64, checkpoint_every=1, progress=True)):
        m2, r2 = train_or_load(cfg, run)
        assert r1["sha256"] == r2["sha256"] and not m2.training
        assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path, monkeypatch):
    cfg = dataclasses.replace(TINY, steps=100)
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path / "a"))
    full, r_full = train_or_load(cfg, QUIET)
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path / "b"))
    train(cfg, QUIET, until=53)     # "interrupted" after 53 steps (last checkpoint at 53)
    assert (artifact_dir("model", cfg) / "checkpoint.safetensors").exists()
    resumed, r_res = train_or_load(cfg, QUIET)
    assert not (artifact_dir("model", cfg) / "checkpoint.safetensors").exists()
    for a, b in zip(full.parameters(), resumed.parameters()): assert torch.equal(a, b)
    assert r_full["history"] == r_res["history"] and r_full["model_loss"] == r_res["model_loss"]


def test_corrupt_or_mismatched_artifacts_raise(home):
    cfg = dataclasses.replace(TINY, steps=10)
    train_or_load(cfg, QUIET)
    folder = artifact_dir("model", cfg)
    w = folder / "model.safetensors"
    data = bytearray(w.read_bytes()); data[-3] ^= 0xFF; w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"): load_model(cfg)
    w.write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError): load_model(cfg)
    train_or_load(cfg, QUIET, retrain=True)   # retraining repairs it
    stored = json.loads((folder / "config.json").read_text()); stored["seed"] = 99
    (folder / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ArtifactError, match="another config"): train_or_load(cfg)


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ValueError, match="d_vocab=2 is too small"): build_model(TrainConfig(process="z1r", d_vocab=2))
    with pytest.raises(ValueError, match="too small"): build_model(TrainConfig(process="z1r_x_z1r", d_vocab=4))
    with pytest.raises(ValueError, match="longer than the model's context"): build_model(TrainConfig(seq_len=20, n_ctx=16))
    with pytest.raises(ValueError, match="known processes"): TrainConfig(process="z2r")
    with pytest.raises(ValueError, match="normalization"): build_model(TrainConfig(normalization="BN"))
    with pytest.raises(ValueError, match="adapter_layer"): build_model(TrainConfig(trainable="adapter", adapter_layer=5))
    with pytest.raises(ValueError, match="KL penalty"): build_model(TrainConfig(kl_weight=0.5, init_from="0123456789ab"))
    with pytest.raises(ValueError, match="Steer.kind"): Steer(resid(0, "pre"), "shift", (1.0,))


def test_optimal_loss_per_position_matches_word_probabilities():
    "The per-position optimum from beliefs equals -log Pr(x_<=t) + log Pr(x_<t) from word probabilities."
    process = make_process("z1r_x_z1r")
    tokens = process.sample(64, 12, seed=0)
    x = model_inputs(tokens, process)
    assert (x[:, 0] == process.vocab_size).all() and torch.equal(x[:, 1:], torch.as_tensor(tokens[:, :-1]))
    ev = evaluate(build_model(TrainConfig()), process, tokens)
    logp = np.stack([process.log_prob(tokens[:, :t + 1]) for t in range(12)], 1)
    cond = -np.diff(np.concatenate([np.zeros((64, 1)), logp], 1), axis=1)
    assert np.allclose(ev["optimal_loss_per_position"], cond.mean(0))
    assert np.isclose(ev["optimal_loss"], -process.log_prob(tokens).sum() / tokens.size)


def test_masked_loss_counts_only_kept_tokens():
    logits = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[0, 1, 2], [3, 0, 1]])
    mask = torch.tensor([[True, False, False], [False, False, True]])
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), targets.reshape(-1), reduction="none").reshape(2, 3)
    assert torch.isclose(masked_ce(logits, targets, mask), (ce[0, 0] + ce[1, 2]) / 2)
    assert torch.isclose(masked_ce(logits, targets, None), ce.mean())


register_loss_mask("test_first_only")(lambda tokens, process: np.arange(tokens.shape[1])[None].repeat(len(tokens), 0) == 0)


def test_finetune_from_a_cached_parent(home):
    parent = dataclasses.replace(TINY, process="pp_z1r_sfp", steps=60)
    child = finetune_config(parent, ProcessSpec("pp_z1r_sfp", prior=(0, 1, 0, 0)), steps=20, lr=1e-3)
    with pytest.raises(ArtifactError, match="not in"): train_or_load(child, QUIET)   # parent not trained yet
    p_model, _ = train_or_load(parent, QUIET)
    c_model, c_rep = train_or_load(child, QUIET)
    assert c_rep["config"]["init_from"] == config_hash(parent)
    first = lambda m: model_log_probs(m, torch.tensor([[4]]))[0, 0].exp()
    assert first(c_model)[1] > first(p_model)[1] + 0.2  # it learned that every sequence is now in V_01
    with pytest.raises(ValueError, match="keep its parent's shape"): train_or_load(dataclasses.replace(child, d_model=16), QUIET)
    masked, _ = train_or_load(dataclasses.replace(child, loss_mask="test_first_only"), QUIET)
    assert not all(torch.equal(a, b) for a, b in zip(masked.parameters(), c_model.parameters()))


def test_kl_penalty_keeps_the_fine_tune_near_its_parent(home):
    parent = dataclasses.replace(TINY, process="pp_z1r_sfp", steps=60)
    p_model, _ = train_or_load(parent, QUIET)
    narrow = ProcessSpec("pp_z1r_sfp", prior=(0, 1, 0, 0))
    free, _ = train_or_load(finetune_config(parent, narrow, steps=30, lr=3e-3), QUIET)
    held, _ = train_or_load(finetune_config(parent, narrow, steps=30, lr=3e-3, kl_weight=50.0, kl_process=parent.process), QUIET)
    x = model_inputs(make_process(parent.process).sample(256, parent.seq_len, seed=9), make_process(parent.process))
    div = lambda m: float(training.mean_kl(model_log_probs(p_model, x), model_log_probs(m, x)))
    assert div(held) < div(free) / 3


def test_steering_during_training_changes_the_weights_but_not_the_evaluation_path(home):
    parent = dataclasses.replace(TINY, steps=40)
    train_or_load(parent, QUIET)
    v = torch.randn(32, generator=torch.Generator().manual_seed(0))
    plain, _ = train_or_load(finetune_config(parent, "z1r", steps=10, lr=1e-3), QUIET)
    steered, rep = train_or_load(finetune_config(parent, "z1r", steps=10, lr=1e-3,
                                                 steer=Steer.from_tensor(resid(0), v, 2.0)), QUIET)
    assert not all(torch.equal(a, b) for a, b in zip(plain.parameters(), steered.parameters()))
    assert all(len(hp.fwd_hooks) == 0 for hp in steered.hook_dict.values())  # no hook left on the saved model
    assert TrainConfig.from_dict(rep["config"]).steer.scale == 2.0


def test_rank_two_adapter_changes_one_weight_by_a_rank_two_matrix(home):
    parent = dataclasses.replace(TINY, steps=40)
    p_model, _ = train_or_load(parent, QUIET)
    child = finetune_config(parent, "z1r", steps=15, lr=1e-2, trainable="adapter", adapter_rank=2, adapter_layer=0)
    c_model, rep = train_or_load(child, QUIET)
    before = dict(p_model.named_parameters())
    diffs = {n: p - before[n] for n, p in c_model.named_parameters() if not torch.equal(p, before[n])}
    assert list(diffs) == ["blocks.0.mlp._original_component.fc_out._original_component.weight"] or len(diffs) == 1
    assert torch.linalg.matrix_rank(next(iter(diffs.values())).double(), atol=1e-6) == 2
    assert np.shape(rep["adapter"]["B"]) == (32, 2) and np.shape(rep["adapter"]["A"]) == (2, 64)


def test_callbacks_are_recorded_and_force_a_retrain_when_missing(home):
    cfg = dataclasses.replace(TINY, steps=20)
    _, r1 = train_or_load(cfg, QUIET)
    assert r1["evals"] == []
    run = dataclasses.replace(QUIET, eval_every=5, callbacks={"k": lambda st: {"step_twice": 2 * st.step}})
    _, r2 = train_or_load(cfg, run)
    assert [e["step"] for e in r2["evals"]] == [0, 5, 10, 15, 20] and [e["k.step_twice"] for e in r2["evals"]] == [0, 10, 20, 30, 40]
    assert r2["sha256"] == r1["sha256"]  # retraining is deterministic


def test_data_pool_limits_the_distinct_sequences(home):
    cfg = dataclasses.replace(TINY, data_pool=8, batch_size=16, steps=3)
    p = make_process(cfg.process)
    seen = np.concatenate([training.batch_tokens(cfg, p, s) for s in range(3)])
    assert len(np.unique(seen, axis=0)) <= 8
    assert (training.batch_tokens(cfg, p, 2) == training.batch_tokens(cfg, p, 2)).all()


def _train_in_subprocess(store: str, steps: int) -> str:
    import os
    os.environ["SFP_ARTIFACTS"] = store
    from sfp_nb.training import RunOptions, TrainConfig, train_or_load
    cfg = TrainConfig(process="z1r", n_layers=1, d_model=32, n_heads=2, d_mlp=64, batch_size=64, steps=steps, warmup_steps=20)
    return train_or_load(cfg, RunOptions(threads=1, progress=False, eval_sequences=512))[1]["sha256"]


def test_concurrent_callers_share_one_training_run(home):
    "Notebooks tested in parallel ask for the same model: one trains, the other waits and loads it."
    import concurrent.futures, multiprocessing
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        shas = list(pool.map(_train_in_subprocess, [str(home / "artifacts")] * 2, [60] * 2))
    assert shas[0] == shas[1]
    assert load_model(dataclasses.replace(TINY, steps=60))[1]["sha256"] == shas[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_matches_cpu_closely(home):
    cfg = dataclasses.replace(TINY, steps=50)
    cpu, r_cpu = train_or_load(cfg, QUIET)
    gpu, r_gpu = train(cfg, dataclasses.replace(QUIET, device="cuda"), folder=home / "gpu")
    assert next(gpu.parameters()).device.type == "cpu"  # the returned bridge is on the CPU, like every artifact
    assert abs(r_cpu["history"][-1][1] - r_gpu["history"][-1][1]) < 0.05
