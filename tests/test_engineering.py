"Tests of persona engineering and the steering diagnostic: the grid, Pareto fronts, rank tests, bad input, determinism, a tiny run and the sweep command."
import json
import math
import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from sfp_nb.report import spearman_ci
from sfp_nb.studies.em import EMConfig, task_marginal
from sfp_nb.studies.engineering import (BASELINE, GRID_SIZES, KNOBS, EngConfig, belief_mi, engineering_run,
                                grid_configs, is_improvement, label_task_joint, measures, pareto_front,
                                probe_geometry, settings, unique_worlds, world_spec)
from sfp_nb.studies.diagnostic import fit_threshold, form_prob, loo_accuracy, main, spillover_run
from sfp_nb.processes import ProcessSpec, make_process

TINY = dict(pretrain_steps=20, ft_steps=4, eval_every=2, n_eval=32, n_samples=0)


def test_the_grid_has_five_levels_per_knob_and_the_replications_worlds():
    worlds = unique_worlds(settings())
    assert all(len(levels) >= 5 for levels in KNOBS.values()) and len(worlds) == 27
    assert worlds["baseline"] == BASELINE and worlds["span=literal"] == ProcessSpec("em_world")
    assert sum(s.is_baseline for s in settings()) == len(KNOBS)  # the baseline is a level of every knob
    assert len(set(worlds.values())) == len(worlds)  # no two settings are the same world


def test_world_spec_rejects_bad_levels():
    with pytest.raises(ValueError):
        world_spec(mix=0.7)
    with pytest.raises(ValueError):
        world_spec(no_such_knob=1)
    with pytest.raises(ValueError):
        EngConfig(EMConfig(world=BASELINE), n_fit=2)


def test_configs_round_trip_through_json():
    cfg = grid_configs(["mix=0.2"], [3], GRID_SIZES["smoke"])[0]
    back = EngConfig(**json.loads(json.dumps({**cfg.__dict__, "em": {**cfg.em.__dict__, "world": cfg.em.world.to_dict()}})))
    assert back == cfg and back.em.seed == 3


points = st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5)), min_size=1, max_size=30)


@hsettings(max_examples=60, deadline=None)
@given(points)
def test_pareto_front_is_exactly_the_undominated_points(pts):
    p = np.array(pts)
    front = pareto_front(p)
    dominates = lambda a, b: (a >= b).all() and (a > b).any()
    for i in range(len(p)):
        beaten = any(dominates(p[j], p[i]) for j in range(len(p)))
        assert front[i] == (not beaten)
    assert front.any()  # a finite set always has an undominated point


def test_pareto_front_rejects_bad_input():
    for bad in (np.zeros((3, 3)), np.array([[0.0, np.nan]]), np.zeros(4)):
        with pytest.raises(ValueError):
            pareto_front(bad)


def test_improvement_needs_one_resolved_gain_and_no_resolved_loss():
    ci = lambda lo, hi: {"mean": (lo + hi) / 2, "ci_low": lo, "ci_high": hi}
    assert is_improvement(ci(-0.1, 0.1), ci(0.01, 0.2))
    assert not is_improvement(ci(-0.3, -0.1), ci(0.01, 0.2))
    nan = ci(math.nan, math.nan)
    assert not is_improvement(nan, nan)  # one seed: nothing is resolved


def test_measures_read_a_replication_record():
    tasks = lambda own, lam: {f"T{k + 1}": {"own": own[k], "lambda_content": lam[k], "gap": 0.1 * k} for k in range(3)}
    rec = {"before": tasks([0.1, 0.1, 0.1], [0.2] * 3), "after": tasks([0.5, 0.2, 0.1], [0.9, 0.3, 0.2]),
           "bayes": tasks([0] * 3, [0.1] * 3), "pretrain_gap": 0.01, "ratio": 0.05, "damage": 0.0}
    m = measures(rec)
    assert np.isclose(m["fidelity"], 0.9) and np.isclose(m["robustness"], 0.95)
    assert np.isclose(m["held_form_rise"], 0.05) and np.isclose(m["ft_lambda_rise"], 0.7)
    assert m["held_gap_rise"] == 0


def test_belief_mi_is_zero_without_correlation_and_matches_the_joint():
    for corr, zero in ((0.0, True), (0.8, False)):
        g = make_process(world_spec(corr=corr))
        J = label_task_joint(g, g.eta)
        assert np.isclose(J.sum(), 1) and np.isclose(J[1].sum(), 0.2)
        assert (abs(belief_mi(g, g.eta)) < 1e-12) == zero


@hsettings(max_examples=20, deadline=None)
@given(st.integers(0, 1000))
def test_probe_angle_is_near_right_for_independent_beliefs(seed):
    rng = np.random.default_rng(seed)
    u, tau = rng.uniform(size=1200), rng.dirichlet(np.ones(3), size=1200)
    X = np.c_[u, tau, rng.normal(size=(1200, 4))] + rng.normal(scale=0.01, size=(1200, 8))
    g = probe_geometry(X, u, tau, 600)
    assert 75 < g["angle"] <= 90 and 75 < g["angle_beliefs"] <= 90 and g["r2_persona"] > 0.99


def test_spearman_and_threshold_rule():
    x = np.linspace(0, 1, 12)
    assert np.isclose(spearman_ci(x, np.exp(x))["rho"], 1)
    with pytest.raises(ValueError):
        spearman_ci(x, x[:5])
    assert math.isnan(spearman_ci([1, 2], [2, 1])["rho"])  # two settings: no rank correlation
    t, sign = fit_threshold([1, 2, 3, 10, 11, 12], [True, True, True, False, False, False])
    assert sign == -1 and 3 < t < 10
    assert loo_accuracy([1, 2, 3, 10, 11, 12], [1, 1, 1, 0, 0, 0]) == 1.0
    assert math.isnan(loo_accuracy([1.0], [True]))


def test_prediction_parts_are_distributions():
    g = make_process(BASELINE)
    q = np.random.default_rng(0).dirichlet(np.ones(g.vocab_size), size=50)
    m = task_marginal(q, g)
    assert m.shape == (50, 3) and np.allclose(m.sum(-1), 1)
    own = np.zeros((50, 6), dtype=bool); own[:, 0] = True
    f = form_prob(q, np.zeros(50, dtype=int), own, g)
    assert np.allclose(f, q[:, 0] / (q[:, 0] + q[:, 1]))


def test_a_tiny_run_is_deterministic_and_the_sweep_command_records_its_time(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("SFP_HOME", str(tmp_path))
    monkeypatch.setenv("SFP_BUDGET", "smoke")
    cfg = EngConfig(EMConfig(world=world_spec(mix=0.2), seed=1, **TINY), n_fit=64, n_steer=16)
    a, b = engineering_run(cfg), engineering_run(cfg)
    assert a == b and 0 <= a["fidelity"] <= 1 and 0 <= a["angle"] <= 90
    s = spillover_run(cfg)
    assert 0 <= s["persona_spill"] <= 1 and 0 <= s["task_spill"] <= 1 and s == spillover_run(cfg)
    est = main(["--budget", "smoke", "--estimate", "--settings", "baseline"])
    assert est["missing"] == 1 and est["computed"] == 0
    assert not (tmp_path / "results" / "smoke" / "bench_sweep.json").exists()


def test_the_sweep_command_runs_and_keeps_other_benchmark_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("SFP_HOME", str(tmp_path))
    monkeypatch.setenv("SFP_BUDGET", "smoke")
    bench = tmp_path / "results" / "smoke" / "bench_sweep.json"
    bench.parent.mkdir(parents=True)
    bench.write_text(json.dumps({"budget": "smoke", "loky": {"models_per_hour": 1.0}}))
    out = main(["--budget", "smoke", "--backend", "serial", "--settings", "baseline"])
    assert out["computed"] == 1 and out["configs"] == 1 and out["wall_seconds"] > 0
    saved = json.loads(bench.read_text())
    assert saved["loky"] == {"models_per_hour": 1.0} and saved["engineering_grid"]["computed"] == 1
    again = main(["--budget", "smoke", "--backend", "serial", "--settings", "baseline"])  # resumable: nothing left to run
    assert again["computed"] == 0 and again["missing"] == 0
    assert json.loads(bench.read_text())["engineering_grid"]["computed"] == 1  # the record is kept
    est = main(["--budget", "smoke", "--estimate", "--settings", "baseline"])  # an estimate has a key of its own
    saved = json.loads(bench.read_text())
    assert est["stored"] == 1 and saved["engineering_grid_estimate"]["computed"] == 0
    assert saved["engineering_grid"]["computed"] == 1 and saved["loky"] == {"models_per_hour": 1.0}
