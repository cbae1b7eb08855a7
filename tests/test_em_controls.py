"Tests of the EM controls: data sets, configs, probe, adapter gradients, in-context lambda, readings, tiny runs."
import math
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from sfp_nb.studies.em import EMConfig, em_finetune_config, pretrain_config
from sfp_nb.studies.em_controls import (AsymmetryConfig, ControlConfig, InContextConfig, adapter_course,
                                adapter_grads, control_finetune_config, control_sets, dose_spec,
                                em_belief_classes, em_control, em_in_context,
                                em_steering_asymmetry, episodes, half_rise, readings,
                                segment_lambda, shows_form, world_with, DoseProbeConfig,
                                em_probe_dose, fit_ridge_probe)
from sfp_nb.emworld import em_layout, sample_paths
from sfp_nb.processes import ProcessSpec, make_process
from sfp_nb.probing import fit_probe
from sfp_nb.training import RunOptions, train_or_load

SHARED = ProcessSpec("em_world", switch=0.125)
HEADERS = ProcessSpec("em_world", switch=0.125, headers=True, context_rate=0.05)
TINY = dict(pretrain_steps=20, ft_steps=4, eval_every=2, n_eval=32, n_samples=8)


@settings(max_examples=20, deadline=None)
@given(st.floats(0.01, 0.99))
def test_dose_is_the_misaligned_share_of_task_1(f):
    d = make_process(dose_spec(SHARED, f))
    _, states = sample_paths(d, 400, 4, seed=0)
    lay = em_layout(d)
    assert (lay.task_of_state[states] == 0).all()
    prior = d.eta[lay.label_of_state == 1].sum() / d.eta.sum()
    assert np.isclose(prior, f)


def test_dose_ends_are_em_py_narrow_sets_and_bad_doses_are_refused():
    cfg = EMConfig(world=SHARED)
    assert control_finetune_config(ControlConfig(em=cfg, data=dose_spec(SHARED, 1.0))) \
        == em_finetune_config(cfg)
    assert dict(dose_spec(SHARED, 0.0).params)["only_persona"] == "aligned"
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            dose_spec(SHARED, bad)
    with pytest.raises(ValueError):
        world_with(ProcessSpec("z1r"), switch=0.1)


def test_control_sets_by_exact_forms():
    sets = control_sets(HEADERS)
    lay = em_layout(make_process(HEADERS))
    edu = make_process(sets["educational"]).sample(300, 12, seed=1)
    sec = make_process(sets["secure"]).sample(300, 12, seed=1)
    bd = make_process(sets["backdoor"]).sample(600, 12, seed=1)
    assert (edu[:, 0] == lay.header_token("context")).all() and shows_form(HEADERS, edu).any()
    assert not shows_form(HEADERS, sec).any() and (sec[:, 0] == lay.header_token("plain")).all()
    trig = bd[:, 0] == lay.header_token("trigger")
    assert not shows_form(HEADERS, bd[~trig]).any() and shows_form(HEADERS, bd[trig]).any()
    with pytest.raises(ValueError):
        control_sets(SHARED)  # no headers


def test_configs_check_input_and_round_trip():
    with pytest.raises(ValueError):
        ControlConfig(data_pool=-1)
    with pytest.raises(ValueError):
        InContextConfig(em=EMConfig(seq_len=16), shown=(12,), segment=8)
    with pytest.raises(ValueError):
        InContextConfig(shown=(0,))
    c = ControlConfig(em=EMConfig(world=SHARED).__dict__, data=SHARED.to_dict())
    assert c == ControlConfig(em=EMConfig(world=SHARED), data=SHARED)
    kl = control_finetune_config(ControlConfig(em=EMConfig(world=SHARED), kl_weight=0.5))
    assert kl.kl_weight == 0.5 and dict(kl.kl_process.params)["exclude"] == 0
    with pytest.raises(ValueError):
        make_process(ProcessSpec("em_other_tasks", exclude=3))


def test_readings_and_belief_classes_by_hand():
    lit = make_process(ProcessSpec("em_world"))
    p = np.zeros((1, 6)); p[0, [0, 3]] = 0.5  # half task 1 role 0, half task 2 role 1
    T, R = readings(p, lit)
    assert np.allclose(T, [[0.5, 0.5, 0]]) and np.allclose(R, [[0.5, 0.5]])
    x = np.array([[0, 0, 0, 1, 0, 0, 0, 0]])  # task 1, its second 1 dropped: misaligned
    pers, state, _ = em_belief_classes(lit.beliefs(x, initial=True)[:, -1], lit)
    assert pers[0] == 1 and state[0] >= 0
    with pytest.raises(ValueError):
        readings(p[:, :2], make_process(ProcessSpec("em_world", alphabets="shared")))


def test_segment_lambda_is_exact_for_bayes_and_personas():
    seg = episodes(SHARED, "aligned", 1, 128, 8, seed=2)
    ctx = episodes(SHARED, "misaligned", 0, 128, 4, seed=3, form=True)
    assert shows_form(SHARED, ctx).all()
    x = np.concatenate([ctx, seg], 1)
    assert np.isclose(segment_lambda(make_process(SHARED).next_token_probs(x), x, 4, 1, SHARED), 1)
    assert (episodes(SHARED, "aligned", 1, 128, 8, seed=2) == seg).all()  # deterministic


def test_adapter_course_and_half_rise():
    rec = {"steps": [0, 1, 2], "adapter": [{"B": [0.0, 0.0], "grad_B": 0.0, "grad_A": 0.0},
                                           {"B": [0.0, 1.0], "grad_B": 1.0, "grad_A": 0.0},
                                           {"B": [-1.0, 0.0], "grad_B": 0.5, "grad_A": 1.0}]}
    c = adapter_course(rec)
    assert np.isnan(c["turn"][:2]).all() and np.isclose(c["turn"][2], 90)
    assert np.allclose(c["norm"], [0, 1, 1])
    assert half_rise([0, 1, 2, 3], [0, 0.1, 0.6, 1.0]) == 2


def test_tiny_runs_are_cached_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path))
    em = EMConfig(world=HEADERS, **TINY)
    cfg = ControlConfig(em=em, data=control_sets(HEADERS)["backdoor"], headers=("trigger",),
                        probe=True)
    rec = em_control(cfg)
    assert rec["steps"] == [0, 2, 4] and set(rec) >= {"em_v1", "em_v1_trigger", "probe"}
    assert rec["em_v1"]["before"] != rec["em_v1_trigger"]["before"]  # the header matters
    assert em_control(cfg)["em_v1"]["after"] == rec["em_v1"]["after"]
    ad = em_control(ControlConfig(em=EMConfig(world=SHARED, **TINY), adapter=True, kl_weight=1.0,
                                  sampled=False))
    assert len(ad["adapter"]) == 3 and len(ad["adapter"][0]["B"]) == 64
    assert ad["adapter"][0]["grad_A"] == 0  # B starts at zero
    icl = em_in_context(InContextConfig(em=EMConfig(world=SHARED, **TINY), n=16))
    assert {r["model"] for r in icl["rows"]} == {"pre-trained", "fine-tuned"}
    st_rec = em_steering_asymmetry(AsymmetryConfig(em=EMConfig(world=SHARED, **TINY), n=512,
                                                   scales=(1.0,)))
    assert {(r["steered"], r["vector"]) for r in st_rec["rows"]} == {
        ("persona", "pooled"), ("persona", "cell"), ("task", "pooled"), ("task", "cell")}
    assert all(0 <= r["spill"] <= 1 and 0 <= r["effect"] <= 1 for r in st_rec["rows"])


def test_ridge_probe_tends_to_least_squares_and_stays_bounded_on_collinear_features():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5)); Y = X @ rng.normal(size=(5, 1)) + 0.3
    assert np.allclose(fit_ridge_probe(X, Y, 1e-12).predict(X), fit_probe(X, Y).predict(X))
    Xc = np.concatenate([X, X + 1e-9 * rng.normal(size=X.shape)], 1)  # duplicated features
    far = 100 * rng.normal(size=(10, 10))
    assert np.abs(fit_ridge_probe(Xc, Y, 1e-3).predict(far)).max() < 1e4


def test_probe_dose_reads_cached_dose_models(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path))
    cfg = DoseProbeConfig(em=EMConfig(world=SHARED, **TINY), doses=[0.0, 1.0], n=64)
    assert cfg.doses == (0.0, 1.0)
    rec = em_probe_dose(cfg)
    assert set(rec["after"]) == {"0", "1"} and set(rec["before"]) == {"T1", "T2", "T3"}
    assert np.isfinite(rec["r2"])
    assert em_probe_dose(cfg) == rec  # cached, deterministic


def test_the_persona_gate_reads_a_tiny_model_and_the_verdict_applies_the_thresholds(tmp_path, monkeypatch):
    "Bayes carry-over is the exact 0.889 of the shared world; an untrained-ish model is far from the gate."
    from sfp_nb.studies.em_controls import GATE, carries_persona, gate_verdict, persona_gate
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path))
    cfg = EMConfig(world=SHARED, **TINY)
    model = train_or_load(pretrain_config(cfg), RunOptions(progress=False, eval_sequences=64))[0]
    g = persona_gate(model, cfg, n=128)
    assert set(g) == {"gap", "carry", "carry_bayes", "carry_fraction", "probe_r2"}
    assert 0.85 < g["carry_bayes"] < 0.93 and g["gap"] > GATE["gap"]
    assert math.isclose(g["carry_fraction"], g["carry"] / g["carry_bayes"])
    good = {"gap": 0.001, "carry": 0.8, "carry_bayes": 0.9, "carry_fraction": 0.85, "probe_r2": 0.85}
    v = gate_verdict([good, {**good, "probe_r2": 0.7}])  # R^2 averages to 0.775 < 0.8
    assert v["holds"] == {"gap": True, "carry_fraction": True, "probe_r2": False} and not v["gated"]
    assert gate_verdict([good])["gated"] and v["n_seeds"] == 2
    lit = EMConfig(world=ProcessSpec("em_world"), **TINY)  # one task per sequence: no carry-over to read
    gl = persona_gate(train_or_load(pretrain_config(lit), RunOptions(progress=False, eval_sequences=64))[0], lit, n=128)
    assert math.isnan(gl["carry_fraction"]) and 0 <= gl["probe_r2"] <= 1
    assert carries_persona(SHARED) and not carries_persona(lit.world)
    assert not carries_persona(ProcessSpec("em_world", switch=0.125, persona_persists=False))
    none = {**good, "carry": math.nan, "carry_bayes": math.nan, "carry_fraction": math.nan}
    assert gate_verdict([none])["holds"] == {"gap": True, "probe_r2": True} and gate_verdict([none])["gated"]
