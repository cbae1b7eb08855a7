"Tests of the EM reversal library: exact metrics, persona cells, vectors, configs, bad input, determinism."
import math
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st

from sfp_nb.studies.em import EMConfig, OracleModel, eval_set, model_probs, task_marginal
from sfp_nb.emworld import sample_paths
from sfp_nb.probing import Probe
from sfp_nb.processes import ProcessSpec, make_process
from sfp_nb.studies.reversal import (HEADER_WORLD, InoculationConfig, PreventionConfig, RealignConfig,
                             ReversalConfig, at_level, centroid_vectors, choose, conditional_steer,
                             kl_rows, neutral_positions, persona_cells, restoration_over_seeds,
                             restored, reversal_summary, steer)
from sfp_nb.training import TrainConfig, build_model, model_inputs
from sfp_nb.interventions import add_vector

SHARED = ProcessSpec("em_world", switch=0.125)

@pytest.fixture(scope="module")
def world():
    return make_process(SHARED)

@pytest.fixture(scope="module")
def cells(world):
    toks, states = sample_paths(world, 512, 16, seed=3)
    return persona_cells(world, toks, states)

@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_kl_rows_is_nonnegative_and_zero_on_itself(seed):
    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.ones(5), size=7), rng.dirichlet(np.ones(5), size=7)
    assert (kl_rows(p, q) >= -1e-12).all()
    assert np.allclose(kl_rows(p, p), 0)

def test_kl_rows_exact_value():
    assert np.isclose(kl_rows([0.5, 0.5], [0.25, 0.75]), 0.5 * math.log(2) + 0.5 * math.log(2 / 3))

def test_task_marginal_sums_to_one(world):
    ev = eval_set(SHARED, n=32, seed=1)
    q = model_probs(OracleModel(ev.process), ev)
    assert np.allclose(task_marginal(q, ev.process).sum(-1), 1)

def test_reversal_summary_oracles():
    ev = eval_set(SHARED, n=64, seed=2)
    q_opt = model_probs(OracleModel(ev.process), ev)
    q_al = model_probs(OracleModel(ev.process, "aligned"), ev)
    out = reversal_summary(q_al, ev, q_opt, q_opt)
    for T in out:
        assert abs(out[T]["lambda"]) < 1e-6 and abs(out[T]["collateral"]) < 1e-9
        assert abs(out[T]["spillover"]) < 1e-9
    assert 0 < neutral_positions(ev).mean() < 1

def test_restored_by_hand():
    lam = lambda *xs: {f"T{i + 1}": {"lambda": x} for i, x in enumerate(xs)}
    r = restored(lam(0.2, 0.1, 0.1), lam(1.0, 0.3, 0.2), lam(0.4, 0.1, 0.25))
    assert np.allclose([r["T1"], r["T2"], r["T3"], r["min_over_tasks"]], [0.75, 1, -0.5, -0.5])
    assert math.isnan(restored(lam(0.2), lam(0.2), lam(0.1))["T1"])

def _row(a, n, c, d=(1.0, 0.25, 0.25)):
    "A table row: rises d per task, n of them undone, collateral c on every task."
    return {"hook": "h", "strength": a, **{f"N_T{k + 1}": x for k, x in enumerate(n)},
            **{f"D_T{k + 1}": x for k, x in enumerate(d)},
            **{f"collateral_T{k}": c for k in (1, 2, 3)}, "collateral_worst": c}

def test_at_level_and_choose():
    assert np.isclose(at_level([0.2, 0.6, 1.0], [1e-4, 1e-3, 1e-2], 0.8), 10**-2.5)
    assert at_level([0.95], [3.0], 0.9) == 3.0
    assert math.isnan(at_level([0.2, 0.6], [1.0, 2.0], 0.9))
    toy = pd.DataFrame([_row(0.1, (0.5, 0.1, 0.1), 0.001), _row(0.2, (0.8, 0.2, 0.2), 0.002),
                        _row(0.4, (1.0, 0.25, 0.25), 0.5)])
    assert choose(toy) == {"hook": "h", "strength": 0.2}  # the best is over budget

def test_choose_pools_seeds_before_dividing():
    # seed 0's tiny rise makes its own ratio 20; pooled, the second setting restores more
    toy = pd.DataFrame([{**_row(0.1, (1.0, 0.2, 0.2), 0.001, (1.0, 0.01, 0.01)), "seed": 0},
                        {**_row(0.1, (1.0, 0.0, 0.0), 0.001), "seed": 1},
                        {**_row(0.2, (1.0, 0.01, 0.01), 0.001, (1.0, 0.01, 0.01)), "seed": 0},
                        {**_row(0.2, (1.0, 0.2, 0.2), 0.001), "seed": 1}])
    assert choose(toy.drop(columns="seed")) == {"hook": "h", "strength": 0.2}

def test_restoration_over_seeds_pools_and_keeps_units():
    rows = pd.DataFrame([_row(0.1, (x, x / 4, x / 4), 0.1 * x) | {"competence_kept": 1.0}
                         for x in (0.5, 0.7, 0.9)])
    out = restoration_over_seeds(rows)
    assert np.isclose(out["pooled_restored"]["mean"], 0.7) and out["pooled_restored"]["seeds"] == 3
    assert np.isclose(out["restored_abs"]["T2"]["mean"], 0.7 / 4)
    assert np.isclose(out["collateral"]["mean"], 0.07)
    assert set(out["collateral_by_task"]["T1"]) >= {"mean", "ci_low", "ci_high", "seeds"}

def test_restoration_over_seeds_gives_no_fraction_of_an_unresolved_rise():
    rows = pd.DataFrame([_row(0.1, (0.5, 0.1, 0.1), 0.0, (1.0, d, -d)) | {"competence_kept": 1.0}
                         for d in (0.1, 0.2, 0.3)])  # the held-out rises cancel: sum 0
    out = restoration_over_seeds(rows)
    assert math.isnan(out["pooled_restored"]["mean"])
    assert np.isclose(out["restored_by_task"]["T1"]["mean"], 0.5)

def test_persona_cells(world, cells):
    assert np.allclose(cells.posterior[:, 0], 0.2) and not cells.usable[:, 0].any()
    assert (cells.usable <= cells.synced).all()
    assert (cells.label == cells.label[:, :1]).all()

def test_persona_cells_is_deterministic(world):
    a = persona_cells(world, *sample_paths(world, 64, 16, seed=9))
    b = persona_cells(world, *sample_paths(world, 64, 16, seed=9))
    assert np.array_equal(a.cell, b.cell) and np.array_equal(a.posterior, b.posterior)

def test_persona_cells_rejects_mismatched_shapes(world):
    toks, states = sample_paths(world, 8, 16, seed=0)
    with pytest.raises(ValueError, match="differ in shape"):
        persona_cells(world, toks, states[:, :-1])

def test_centroid_vectors_planted(cells):
    u = np.random.default_rng(0).normal(size=6)
    bv = centroid_vectors(cells.posterior[..., None] * u, cells)
    cos = lambda a: float(a @ u / np.linalg.norm(a) / np.linalg.norm(u))
    assert np.isclose(cos(bv["pooled"].numpy()), -1, atol=1e-5)
    assert all(np.isclose(cos(v.numpy()), -1, atol=1e-5) for v in bv["per_task"])

def test_conditional_steer_with_constant_probe_is_add_vector(world):
    tiny = build_model(TrainConfig(process=SHARED, seq_len=16, d_model=16, n_heads=1, d_mlp=32))
    V = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    always = Probe(np.zeros((16, 3)), np.array([0.0, 0.0, 1.0]))
    x = model_inputs(world.sample(4, 16, seed=0), world)
    hook = "blocks.0.hook_resid_post"
    with conditional_steer(tiny, hook, V, always, 0.5): a = tiny(x)
    with add_vector(tiny, hook, V[2], 0.5, "all"): b = tiny(x)
    assert torch.allclose(a, b)
    with pytest.raises(ValueError, match="method"):
        steer(tiny, hook, "nonsense", {"resid_norm": 1.0}, 0.1)

def test_configs_reject_bad_input():
    with pytest.raises(ValueError, match="lo"):
        ReversalConfig(lo=0.9, hi=0.1)
    with pytest.raises(ValueError, match="strengths"):
        ReversalConfig(strengths=(0.1, -0.2))
    with pytest.raises(ValueError, match="method"):
        PreventionConfig(method="pray")
    with pytest.raises(ValueError, match="strength"):
        PreventionConfig(strength=0)
    with pytest.raises(ValueError, match="steps"):
        RealignConfig(steps=0)
    with pytest.raises(ValueError, match="headers"):
        InoculationConfig(em=EMConfig(world=SHARED))

def test_configs_round_trip_from_dicts():
    import dataclasses
    em = EMConfig(world=HEADER_WORLD, seed=3)
    cfg = InoculationConfig(em=dataclasses.asdict(em))
    assert cfg.em == em
    assert ReversalConfig(strengths=[1, 2]).strengths == (1.0, 2.0)
