"Probing: planted linear structure is recovered exactly, activations match run_with_cache, clear errors."
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sfp_nb.probing import (collect_activations, fit_probe, principal_angles, probe_model, probe_targets, r2_score,
                            resid_hooks, rmse)
from sfp_nb.training import TrainConfig, build_model, make_process, model_inputs


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), d=st.integers(2, 24), k=st.integers(1, 5))
def test_probe_recovers_planted_affine_map(seed, d, k):
    rng = np.random.default_rng(seed)
    W, b = rng.normal(size=(d, k)), rng.normal(size=k)
    X = rng.normal(size=(4 * d + 10, d))
    p = fit_probe(X, X @ W + b)
    assert np.allclose(p.W, W, atol=1e-8) and np.allclose(p.b, b, atol=1e-8)
    X_new = rng.normal(size=(50, d))
    assert r2_score(X_new @ W + b, p.predict(X_new)) > 1 - 1e-10
    assert rmse(X_new @ W + b, p.predict(X_new)) < 1e-8


def test_probe_with_noise_and_leading_axes():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 7, 8))
    W = rng.normal(size=(8, 3))
    Y = X @ W + 0.1 * rng.normal(size=(300, 7, 3))
    p = fit_probe(X, Y)
    assert p.predict(X).shape == (300, 7, 3)
    assert np.allclose(p.W, W, atol=0.02)
    assert 0.9 < r2_score(Y, p.predict(X)) < 1
    assert abs(rmse(Y, p.predict(X)) - 0.1) < 0.01


def test_r2_of_mean_prediction_is_zero():
    Y = np.random.default_rng(2).normal(size=(100, 2))
    assert abs(r2_score(Y, np.broadcast_to(Y.mean(0), Y.shape))) < 1e-12


def test_principal_angles_planted():
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    A = Q[:, :2] @ rng.normal(size=(2, 3))                     # rank 2 with 3 columns
    theta = 0.3
    B = np.stack([np.cos(theta) * Q[:, 0] + np.sin(theta) * Q[:, 5], Q[:, 7]], 1)
    assert np.allclose(principal_angles(A, B), [theta, np.pi / 2])
    assert np.allclose(principal_angles(A, A), 0, atol=1e-6)


def test_collect_activations_matches_cache_and_rejects_unknown_hooks():
    proc = make_process("z1r_x_z1r")
    model = build_model(TrainConfig())
    x = model_inputs(proc.sample(37, 12, seed=0), proc)
    acts = collect_activations(model, x, resid_hooks(2) + ["blocks.0.attn.hook_pattern"], batch_size=10)
    _, cache = model.run_with_cache(x)
    for h, a in acts.items():
        assert np.allclose(a, cache[h].double().numpy(), atol=1e-6)
    assert acts["blocks.0.hook_resid_pre"].shape == (37, 12, 64)
    with pytest.raises(ValueError, match="unknown hook name"):
        collect_activations(model, x, ["blocks.2.hook_resid_post"])


def test_probe_targets_and_probe_model_shapes():
    proc = make_process("pp_z1r_sfp")
    tokens = proc.sample(20, 6, seed=0)
    t = probe_targets(proc, tokens)
    assert np.allclose(t["sector"].sum(-1), 1) and np.allclose(t["factor_0"].sum(-1), 1)
    assert np.allclose(t["joint"][:, 1:], proc.beliefs(tokens)[:, :-1])
    scores, probes = probe_model(build_model(TrainConfig(process="pp_z1r_sfp", seq_len=6)), proc, 6, n_train=100, n_test=50)
    assert set(scores["concat"]) == {"joint", "factor_0", "factor_1", "sector"}
    assert all(np.isfinite(s["r2"]) and s["rmse"] >= 0 for h in scores.values() for s in h.values())
