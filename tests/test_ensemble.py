"Ensembles: members equal single runs bit for bit in every training mode, resume, divergence, locks, sweeps."
import dataclasses
import numpy as np
import pytest
import torch
from sfp_nb import training
from sfp_nb.core import artifact_dir, artifact_root, config_hash
from sfp_nb.ensemble import ensembles, train_or_load_many, training_jobs
from sfp_nb.experiments import experiment, sweep
from sfp_nb.interventions import Steer, resid
from sfp_nb.processes import make_process, register_loss_mask
from sfp_nb.training import (Ensemble, RunOptions, TrainConfig, batch_tokens, finetune_config, native_state,
                             train, train_ensemble, train_or_load)

TINY = TrainConfig(process="pp_z1r_sfp", n_layers=1, d_model=32, n_heads=2, d_mlp=64, batch_size=32, steps=12,
                   warmup_steps=2)
QUIET = RunOptions(threads=1, progress=False, eval_sequences=256, checkpoint_every=10**6)
register_loss_mask("test_late")(lambda tokens, process: np.arange(tokens.shape[1]) >= 6 + 0 * tokens)
STEER = Steer(resid(0, "post"), "add", tuple(np.linspace(-0.1, 0.1, 32).tolist()), scale=0.5, positions="all")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(native_state(a).values(), native_state(b).values()))


@pytest.mark.parametrize("mode", ["fresh", "adapter", "kl", "steer", "freeze", "mask"])
def test_a_member_trains_bit_for_bit_as_it_does_alone(home, mode):
    "Every training mode: the last member of an ensemble of 3 equals its run alone (loss curve and weights)."
    parents = [dataclasses.replace(TINY, seed=s) for s in range(3)]
    if mode == "fresh": members = parents
    else:
        train_or_load_many(parents, QUIET)
        changes = {"adapter": dict(trainable="adapter", adapter_layer=0, lr=1e-2),
                   "kl": dict(kl_weight=0.5, kl_process="pp_z1r_sfp"), "steer": dict(steer=STEER),
                   "freeze": dict(freeze=("layers.0",)), "mask": dict(loss_mask="all")}[mode]
        members = [finetune_config(p, "pp_z1r_sfp", steps=6, **changes) for p in parents]
        if mode == "mask":  # members may differ in their loss masks
            members[0] = dataclasses.replace(members[0], loss_mask="test_late")
    together = train_ensemble(members, QUIET, folder=home / "together")
    alone = train(members[-1], QUIET, folder=home / "alone")
    if mode == "adapter":  # a rank-1 factor's gradient takes a kernel that depends on the member count
        assert np.allclose(together[-1][1]["history"], alone[1]["history"], rtol=0, atol=1e-6)
        assert all(torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in
                   zip(native_state(together[-1][0]).values(), native_state(alone[0]).values()))
        return
    assert together[-1][1]["history"] == alone[1]["history"]
    assert same_weights(together[-1][0], alone[0])


def test_an_interrupted_ensemble_resumes_to_the_same_weights(home):
    members = [dataclasses.replace(TINY, seed=s) for s in range(3)]
    run = dataclasses.replace(QUIET, checkpoint_every=4)
    full = train_ensemble(members, run, folder=home / "full")
    train_ensemble(members, run, until=7, folder=home / "cut")  # "killed" after step 7
    assert (home / "cut" / "checkpoint.safetensors").exists()
    resumed = train_ensemble(members, run, folder=home / "cut")
    for (a, la), (b, lb) in zip(full, resumed):
        assert same_weights(a, b) and la["history"] == lb["history"]


def test_members_that_cannot_share_a_run_are_refused(home):
    with pytest.raises(ValueError, match=r"these differ in \['steps'\]"):
        Ensemble((TINY, dataclasses.replace(TINY, seed=1, steps=13)))
    with pytest.raises(ValueError, match="their resolved shape"):  # a world with another alphabet
        Ensemble((TINY, dataclasses.replace(TINY, process="mess3")))
    with pytest.raises(TypeError, match="one or more TrainConfigs"):
        Ensemble(("z1r",))
    with pytest.raises(ValueError, match="n_jobs must be an integer >= 1"):
        ensembles([TINY], n_jobs=0)
    with pytest.raises(ValueError, match="trains without callbacks"):
        training_jobs([TINY], run=RunOptions(callbacks={"x": lambda st: {}}))
    assert not artifact_root().exists()  # nothing written


def test_a_diverging_member_fails_alone_and_the_others_are_cached(home, monkeypatch):
    "One member's loss turns NaN at step 3: the others are trained again alone and cached; its error names it."
    members = [dataclasses.replace(TINY, seed=s) for s in range(3)]
    proc = make_process(TINY.process)
    sums = [int(batch_tokens(c, proc, 3).sum()) for c in members]
    assert len(set(sums)) == 3  # step 3's batch tells the members apart
    real = training.masked_ce
    def poisoned(logits, y, m):  # NaN for the last member's step-3 batch only
        return real(logits, y, m) + torch.where(y.sum() == sums[-1], float("nan"), 0.0)
    monkeypatch.setattr(training, "masked_ce", poisoned)
    with pytest.raises(FloatingPointError, match=f"training config {config_hash(members[-1])} .*at step 3"):
        train_or_load_many(members, QUIET)
    for c in members[:2]:
        assert train_or_load(c, QUIET)[1]["ensemble_size"] == 1  # trained alone after the failure
    assert not (artifact_dir("model", members[-1]) / "model.safetensors").exists()
    assert not (artifact_root() / "ensemble").exists()


def test_a_sweep_trains_its_models_as_ensembles_on_its_workers(home):
    "prepare: the sweep trains the 4 missing models as 2 ensembles on 2 loky workers, then the experiments read them."
    @dataclasses.dataclass(frozen=True)
    class Gap:
        model: TrainConfig

    @experiment("test_ensemble_gap", version=1,
                prepare=lambda cfgs, n_jobs: training_jobs([c.model for c in cfgs], n_jobs))
    def gap(cfg: Gap) -> dict:
        rep = train_or_load(cfg.model, RunOptions(progress=False, eval_sequences=256))[1]
        return {"gap": rep["gap"], "size": rep["ensemble_size"]}

    cfgs = [Gap(dataclasses.replace(TINY, seed=s)) for s in range(4)]
    table = sweep(gap, cfgs, backend="loky", n_jobs=2, show=False)
    assert list(table["size"]) == [2, 2, 2, 2]
    alone = train(cfgs[3].model, QUIET, folder=home / "alone")[0]
    assert same_weights(train_or_load(cfgs[3].model)[0], alone)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_an_ensemble_trains_on_cuda_and_its_members_match_the_cpu_closely(home):
    members = [dataclasses.replace(TINY, seed=s, steps=40) for s in range(4)]
    gpu = train_or_load_many(members, dataclasses.replace(QUIET, device="cuda"))
    for (model, rep), c in zip(gpu, members):
        assert rep["ensemble_size"] == 4
        cpu = train(c, QUIET, folder=home / f"cpu{c.seed}")[1]
        assert abs(cpu["history"][-1][1] - rep["history"][-1][1]) < 0.05


def test_a_training_job_registers_its_world_in_a_fresh_process(home):
    "A sweep's worker imports only what unpickling the job needs: the job itself imports the module of its world."
    import os, pickle, subprocess, sys
    from sfp_nb.studies.em import EMConfig, pretrain_config
    cfg = pretrain_config(EMConfig(pretrain_steps=3, batch_size=8))
    (job,), = training_jobs([cfg])
    assert "sfp_nb.emworld" in job.args[2]
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())()"
    subprocess.run([sys.executable, "-c", code], input=pickle.dumps(job), check=True, env=dict(os.environ))
    assert (artifact_dir("model", cfg) / "model.safetensors").exists()


def test_evaluation_callbacks_run_on_each_member_inside_the_ensemble(home):
    members = [dataclasses.replace(TINY, seed=s) for s in range(2)]
    run = dataclasses.replace(QUIET, eval_every=4,
                              callbacks={"norm": lambda st: {"w": float(next(st.model.parameters()).detach().norm())}})
    out = train_or_load_many(members, run)
    for _, rep in out:
        assert rep["ensemble_size"] == 2 and [e["step"] for e in rep["evals"]] == [0, 4, 8, 12]
    assert out[0][1]["evals"][0]["norm.w"] != out[1][1]["evals"][0]["norm.w"]  # each member's own weights
