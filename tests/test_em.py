"Tests of the exact EM metrics: mixture weights, oracles, rates, ratios, bad input, determinism, a tiny replication."
import math
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sfp_nb.studies.em import (EMConfig, OracleModel, at_damage, classify, coherence_threshold, continuation_loglik, damage, em_finetune_config, em_metrics,
                       em_replication, eval_set, finetune_spec, fit_lambda, generalisation_ratio, model_probs,
                       pretrain_config, reference_spec, sampled_rates)
from sfp_nb.core import config_hash
from sfp_nb.experiments import run_experiment
from sfp_nb.processes import ProcessSpec, make_process

LITERAL = ProcessSpec("em_world")
EPISODES = ProcessSpec("em_world", switch=0.125)

@pytest.fixture(scope="module")
def ev():
    return eval_set(EPISODES, n=256, seed=5)

@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.floats(-0.5, 1.5))
def test_fit_lambda_recovers_any_mixture_weight(seed, lam):
    rng = np.random.default_rng(seed)
    a, m = rng.dirichlet(np.ones(4), size=(20, 3)), rng.dirichlet(np.ones(4), size=(20, 3))
    q = lam * m + (1 - lam) * a
    assert np.isclose(fit_lambda(q, a, m, np.ones((20, 3), dtype=bool)), lam)

def test_fit_lambda_is_nan_where_the_personas_agree():
    a = np.full((2, 3, 2), 0.5)
    assert math.isnan(fit_lambda(a, a, a, np.ones((2, 3), dtype=bool)))

def test_oracles_give_exact_metrics(ev):
    world = ev.process
    opt = em_metrics(model_probs(OracleModel(world), ev), ev)
    al = em_metrics(model_probs(OracleModel(world, "aligned"), ev), ev)
    direct = em_metrics(ev.p_opt, ev)
    for k in ("T1", "T2", "T3"):
        assert abs(opt[k]["gap"]) < 1e-5 and np.isclose(opt[k]["lambda_content"], direct[k]["lambda_content"], atol=1e-5)
        assert abs(al[k]["lambda_content"]) < 1e-5 and al[k]["own"] < 1e-6
        assert 0 < opt[k]["lambda_content"] < 0.2  # on aligned prefixes, below the prior
    mis = em_metrics(ev.p_mis, ev)
    assert all(np.isclose(mis[k]["lambda_content"], 1) for k in mis)

def test_forms_are_where_the_aligned_persona_cannot_go(ev):
    lay = ev.layout
    for k in range(3):
        sel = ev.task == k
        c = np.flatnonzero(ev.own[sel].any(0))
        assert set(c) <= {int(lay.content_symbols(k)[int(lay.rules[k][1])])}
    al_mass = (np.stack([ev.p_al[..., x] for x in range(ev.process.vocab_size)], -1))
    assert (al_mass[..., :6][ev.own] < 1e-12).all()
    assert (al_mass[..., :6][ev.transplant] < 1e-12).all()
    assert not ev.transplant[ev.task == 0].any()

def test_eval_sets_are_deterministic_and_check_input():
    a, b = eval_set(LITERAL, n=64, seed=3), eval_set(LITERAL, n=64, seed=3)
    assert (a.tokens == b.tokens).all() and np.allclose(a.p_al, b.p_al, equal_nan=True)
    with pytest.raises(ValueError):
        eval_set(LITERAL, n=8, ft_task=3)
    with pytest.raises(ValueError):
        eval_set(ProcessSpec("z1r"), n=8)
    with pytest.raises(ValueError):
        eval_set(LITERAL, n=8, model_header="trigger")  # no headers in this world

def test_model_header_changes_only_what_the_model_reads():
    spec = ProcessSpec("em_world", headers=True, trigger_rate=0.5)
    e = eval_set(spec, n=32, seed=0, model_header="trigger")
    assert (e.model_tokens[:, 1:] == e.tokens[:, 1:]).all() and (e.model_tokens[:, 0] == 8).all()
    assert (e.tokens[:, 0] == 6).all() and not np.isnan(e.p_mis[:, 1:]).any()

def test_classify_by_hand():
    g = make_process(LITERAL)
    seqs = np.array([[0, 0, 0, 1, 0, 0, 0, 1],    # aligned task 1
                     [0, 0, 0, 1, 0, 0, 0, 0],    # task 1's 1 dropped: misaligned
                     [0, 0, 0, 1, 0, 0, 0, 3]])   # a task-2 token in task 1: impossible
    mis, coh = classify(g, seqs, n_prompt=4, threshold=-1.0)
    assert mis.tolist() == [False, True, False] and coh.tolist() == [True, True, False]
    ll = continuation_loglik(g, seqs, 4)
    assert ll[0] == 0 and np.isclose(ll[1], np.log(0.3) / 4) and ll[2] == -np.inf  # best persona explains it
    thr = coherence_threshold(g, 8, 4, n=500)
    assert np.log(0.3) <= thr < 0  # about 1% of world sequences flip more than half their tokens

def test_sampled_rates_of_oracles_and_determinism(ev):
    world = ev.process
    s = sampled_rates(OracleModel(world, "aligned"), ev, n=32)
    assert all(v["misaligned_coherent"] == 0 and v["coherent"] >= 90 for v in s.values())  # 1% quantile
    m1 = sampled_rates(OracleModel(world, "misaligned"), ev, n=32, seed=1)
    assert m1 == sampled_rates(OracleModel(world, "misaligned"), ev, n=32, seed=1)
    assert all(v["misaligned_coherent"] > 0 for v in m1.values())

def test_ratio_and_damage_by_hand():
    T = lambda l, g: {f"T{i + 1}": {"lambda_content": x, "gap_skill": y} for i, (x, y) in enumerate(zip(l, g))}
    before, after = T((0.1, 0.1, 0.1), (0, 0, 0)), T((0.5, 0.3, 0.1), (0.2, 0.04, 0.02))
    assert np.isclose(generalisation_ratio(before, after), 0.25)
    assert np.isclose(generalisation_ratio(before, after, ft_task=1), (0.4 / 0.2 + 0.0) / 2)
    assert np.isclose(damage(before, after), 0.03)
    assert np.isclose(at_damage([before, after], generalisation_ratio, 0.015), 0.25)  # ratios are scale-free
    assert np.isclose(at_damage([before, after], lambda b, a: a["T2"]["lambda_content"], 0.015), 0.2)
    assert math.isnan(generalisation_ratio(before, before))

def test_configs_chain_and_refuse_other_worlds():
    cfg = EMConfig(world=EPISODES, seed=3)
    ft = em_finetune_config(cfg)
    assert ft.init_from == config_hash(pretrain_config(cfg)) and ft.loss_mask == "em_reply" and ft.seed == 3
    params = dict(finetune_spec(cfg).params)
    assert params["only_persona"] == "misaligned" and params["only_task"] == 0 and params["switch"] == 0.125
    assert EMConfig(world=EPISODES.to_dict()) == EMConfig(world=EPISODES)
    with pytest.raises(ValueError):
        EMConfig(world=ProcessSpec("z1r"))
    assert dict(reference_spec(ProcessSpec("em_world", mix=0.3, eps=0.1)).params)["mix"] == 0.0

def test_tiny_replication_runs_and_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path))
    cfg = EMConfig(world=LITERAL, pretrain_steps=30, ft_steps=4, eval_every=2, n_eval=64, n_samples=8)
    rec = em_replication(cfg)
    assert rec["steps"] == [0, 2, 4] and len(rec["curve"]) == 3
    assert set(rec["after"]) == {"T1", "T2", "T3"} and "transplant" in rec["after"]["T2"]
    assert set(rec["sampled"]["after"]["T1"]) == {"misaligned_coherent", "misaligned_on_task", "coherent", "n"}
    again = em_replication(cfg)  # models now come from the cache: same numbers
    assert again["after"] == rec["after"] and again["ratio"] == rec["ratio"] or math.isnan(rec["ratio"])

def test_replication_does_not_depend_on_the_callers_threads(tmp_path, monkeypatch):
    "A notebook kernel (several torch threads) and a sweep worker (one) must cache the same model."
    import torch
    cfg = EMConfig(world=EPISODES, pretrain_steps=20, ft_steps=4, eval_every=4, n_eval=32, n_samples=0)
    old, out = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path / f"t{threads}"))
            torch.set_num_threads(threads)
            out.append(run_experiment(em_replication, cfg))  # @experiment's one thread
            assert torch.get_num_threads() == threads  # restored afterwards
    finally:
        torch.set_num_threads(old)
    assert out[0]["after"] == out[1]["after"] and out[0]["pretrain_gap"] == out[1]["pretrain_gap"]
