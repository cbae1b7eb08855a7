"Probing: planted linear structure is recovered exactly, whitened angles ignore the coordinates, the null is right."
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sfp_nb.probing import (angle_null, best_function_r2, fit_probe, group_means, hook_label, principal_angles,
                            probe_model, probe_targets, r2_score, random_subspace_angles, resid_hooks,
                            residual_features, rmse, whitened_angles, whitening)
from sfp_nb.processes import make_process
from sfp_nb.studies.world_model import ProbeConfig, probe_world, seed_summary
from sfp_nb.training import TrainConfig, build_model, model_inputs


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


def test_r2_of_mean_prediction_is_zero_and_mismatched_rows_fail():
    Y = np.random.default_rng(2).normal(size=(100, 2))
    assert abs(r2_score(Y, np.broadcast_to(Y.mean(0), Y.shape))) < 1e-12
    with pytest.raises(ValueError, match="rows"):
        fit_probe(Y, Y[:50])


def test_principal_angles_planted():
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    A = Q[:, :2] @ rng.normal(size=(2, 3))                     # rank 2 with 3 columns
    theta = 0.3
    B = np.stack([np.cos(theta) * Q[:, 0] + np.sin(theta) * Q[:, 5], Q[:, 7]], 1)
    assert np.allclose(principal_angles(A, B), [theta, np.pi / 2])
    assert np.allclose(principal_angles(A, A), 0, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), d=st.integers(3, 12))
def test_whitened_angles_invariant_to_invertible_maps(seed, d):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(20 * d, d)) @ rng.normal(size=(d, d))
    Ya, Yb = X @ rng.normal(size=(d, 2)), X @ rng.normal(size=(d, 1))
    M = rng.normal(size=(d, d)) + 2 * np.sqrt(d) * np.eye(d)    # invertible, far from singular
    angles = [whitened_angles(fit_probe(Z, Ya).W, fit_probe(Z, Yb).W, whitening(Z, 1.0)) for Z in (X, X @ M)]
    assert np.allclose(*angles, atol=1e-6)
    Xc = X - X.mean(0)                                         # = angles between the probes' outputs
    assert np.allclose(angles[0], principal_angles(Xc @ fit_probe(X, Ya).W, Xc @ fit_probe(X, Yb).W), atol=1e-6)


def test_whitened_angles_of_planted_subspaces():
    "Readouts of a white signal at a planted angle, mixed into a stretched space, then padded with tiny noise."
    rng = np.random.default_rng(4)
    z = rng.normal(size=(20000, 5))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False)).T)   # exactly white
    theta = np.radians(35)
    wa = np.eye(5)[:, [0, 1]]
    wb = np.stack([np.cos(theta) * np.eye(5)[:, 0] + np.sin(theta) * np.eye(5)[:, 2], np.eye(5)[:, 3]], 1)
    mix = rng.normal(size=(5, 8)) * np.array([100, 10, 1, 0.1, 0.01, 1, 1, 1])   # anisotropic coordinates
    X = z @ mix + 1e-9 * rng.normal(size=(20000, 8))
    L = whitening(X, keep=0.999999)
    assert len(L) == 5                                        # the noise directions are dropped
    got = whitened_angles(fit_probe(X, z @ wa).W, fit_probe(X, z @ wb).W, L)
    assert np.allclose(np.degrees(got), [35, 90], atol=1e-3)
    raw = principal_angles(fit_probe(X, z @ wa).W, fit_probe(X, z @ wb).W, 1e-6)
    assert not np.allclose(np.degrees(raw), [35, 90], atol=1)  # raw coordinates distort them


def test_whitening_rejects_bad_keep():
    with pytest.raises(ValueError, match="keep"):
        whitening(np.ones((10, 3)), keep=0)


def test_null_lines_in_the_plane_are_uniform():
    ang = np.degrees(random_subspace_angles(2, 1, 1, 40000, seed=0)[:, 0])
    assert ang.min() >= 0 and ang.max() <= 90
    hist = np.histogram(ang, bins=9, range=(0, 90))[0] / len(ang)
    assert np.allclose(hist, 1 / 9, atol=0.01)


def test_null_concentrates_near_90_in_high_dimension():
    small, large = angle_null(10, 2, 2, 2000, seed=1), angle_null(400, 2, 2, 2000, seed=1)
    assert large["low"] > 80 and large["high"] - large["low"] < 10
    assert small["low"] < large["low"] and small["median"] < large["median"]
    assert random_subspace_angles(7, 3, 3, 5, seed=2).shape == (5, 3)
    assert np.allclose(random_subspace_angles(4, 4, 2, 5, seed=3), 0, atol=1e-6)  # the whole space contains all
    assert angle_null(30, 2, 2, 500, seed=4) == angle_null(30, 2, 2, 500, seed=4)
    with pytest.raises(ValueError, match="k_a"):
        random_subspace_angles(3, 4, 1, 10)


def test_residual_features_match_cache_and_reject_unknown_hooks():
    proc = make_process("z1r_x_z1r")
    model = build_model(TrainConfig())
    tokens = proc.sample(37, 12, seed=0)
    acts = residual_features(model, proc, tokens)
    _, cache = model.run_with_cache(model_inputs(tokens, proc))
    for h in resid_hooks(2):
        assert acts[h].dtype == np.float64 and np.allclose(acts[h], cache[h].double().numpy(), atol=1e-6)
    assert acts["concat"].shape == (37, 12, 192) and hook_label(resid_hooks(2)[-1]) == "L1_post"
    with pytest.raises(ValueError, match="unknown hook name"):
        residual_features(model, proc, tokens, ["blocks.2.hook_resid_post"])


def test_probe_targets_and_probe_model_shapes():
    proc = make_process("pp_z1r_sfp")
    tokens = proc.sample(20, 6, seed=0)
    t = probe_targets(proc, tokens)
    assert np.allclose(t["sector"].sum(-1), 1) and np.allclose(t["factor_0"].sum(-1), 1)
    assert np.allclose(t["joint"][:, 1:], proc.beliefs(tokens)[:, :-1])
    assert np.allclose(t["next_token"], proc.next_token_probs(tokens))
    scores, probes = probe_model(build_model(TrainConfig(process="pp_z1r_sfp", seq_len=6)), proc, 6, n_train=100, n_test=50)
    assert set(scores["concat"]) == {"joint", "next_token", "factor_0", "factor_1", "sector"}
    assert all(np.isfinite(s["r2"]) and s["rmse"] >= 0 for h in scores.values() for s in h.values())


def test_probe_world_is_deterministic_and_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path))
    cfg = ProbeConfig(TrainConfig(process="z1r_x_z1r", steps=5, seed=3), n_train=60, n_test=30, n_null=50)
    a, b = probe_world(cfg), probe_world(cfg)                   # the second call loads the cached model
    assert a == b
    assert {"gap", "r2", "untrained_r2", "shuffled_r2", "ceiling_r2", "angles"} <= set(a)
    assert set(a["r2"]) == {"L0_pre", "L1_pre", "L1_post", "concat"}
    m = ProbeConfig(TrainConfig(process="mess3", steps=5), n_train=60, n_test=30)
    rec = probe_world(m)
    assert "angles" not in rec                                   # one factor: no angles
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in rec["ceiling_r2"]["joint"].values())  # Mess3: E invertible


def test_best_function_of_a_key():
    rng = np.random.default_rng(5)
    key = rng.integers(0, 3, size=(600, 1))
    y = np.concatenate([key == 0, key == 1, key == 2], 1).astype(float)    # a function of the key
    assert best_function_r2(key, y) == pytest.approx(1.0)
    noise = rng.normal(size=(600, 2))
    g = group_means(key, noise)
    for k in range(3):                                                    # each row gets its group's mean
        assert np.allclose(g[key[:, 0] == k], noise[key[:, 0] == k].mean(0))
    assert best_function_r2(np.zeros((600, 1)), noise) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="rows"):
        group_means(key, noise[:10])


def test_seed_summary():
    s = seed_summary([{"a": 1.0, "b": [10.0, 20.0]}, {"a": 3.0, "b": [30.0, 40.0]}, {"a": 2.0, "b": [20.0, 30.0]}])
    assert s["a"]["mean"] == 2.0 and s["a"]["seeds"] == 3 and s["a"]["ci_low"] < 1.0
    assert s["b"]["theta1"]["mean"] == 20.0 and s["b"]["theta2"]["mean"] == 30.0
    with pytest.raises(ValueError, match="keys"):
        seed_summary([{"a": 1.0}, {"b": 1.0}])
