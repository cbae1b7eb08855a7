"""Tests of sfp_nb.steering: interventions, vectors and metrics (no trained model needed)."""
import numpy as np
import pytest
import torch
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge
import transformer_lens.model_bridge.sources  # noqa: F401  (registers boot_native)

from sfp_nb.processes import factored, pp_z1r_sfp, z1r
from sfp_nb.steering import (ablate_and_add, ablate_direction, add_vector, allowed_tokens, belief_centroids, class_mass,
                             collect, diff_in_means, factor_marginals, forbidden_mass, kl, logit_contrasts, project,
                             random_like, steering_metrics, steering_sweep, summarize, swap_factor)
from sfp_nb.training import model_inputs

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def proc():
    return factored(z1r(), z1r())


@pytest.fixture(scope="module")
def model(proc):
    cfg = TransformerBridgeConfig(d_model=32, d_head=16, n_heads=2, n_layers=2, n_ctx=10, d_vocab=proc.vocab_size + 1,
                                  d_mlp=64, act_fn="gelu", normalization_type="LN", seed=0)
    return TransformerBridge.boot_native(cfg).eval()


@pytest.fixture(scope="module")
def inputs(proc):
    return model_inputs(proc.sample(16, 10, seed=0), proc)


def _no_hooks(model):
    return all(len(hp.fwd_hooks) == 0 for hp in model.hook_dict.values())


# ---- interventions -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("positions", ["final", "all"])
@pytest.mark.parametrize("hook", [HOOK, "blocks.0.hook_resid_pre", "ln_final.hook_normalized"])
def test_scale_zero_changes_nothing_exactly(model, inputs, hook, positions):
    v = torch.randn(32, generator=torch.Generator().manual_seed(1)) * 100
    with torch.no_grad():
        base = model(inputs)
        with add_vector(model, hook, v, 0.0, positions):
            same = model(inputs)
    assert torch.equal(base, same)
    assert _no_hooks(model)


def test_nonzero_scale_changes_only_steered_positions(model, inputs):
    v = torch.randn(32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = model(inputs)
        with add_vector(model, HOOK, v, 2.0, "final"):
            moved = model(inputs)
        mask = torch.zeros(inputs.shape[1], dtype=torch.bool); mask[3] = True
        with add_vector(model, HOOK, v, 2.0, mask):
            at3 = model(inputs)
    assert torch.equal(base[:, :-1], moved[:, :-1]) and not torch.allclose(base[:, -1], moved[:, -1])
    # resid_post of the last block feeds only the unembedding at its own position
    assert torch.equal(base[:, :3], at3[:, :3]) and torch.equal(base[:, 4:], at3[:, 4:]) and not torch.allclose(base[:, 3], at3[:, 3])


@pytest.mark.parametrize("make", [
    lambda m, v: add_vector(m, HOOK, v, 1.0),
    lambda m, v: ablate_direction(m, HOOK, v),
    lambda m, v: ablate_and_add(m, HOOK, v, v, 1.0, "all"),
])
def test_hook_removed_after_exception(model, inputs, make):
    v = torch.ones(32)
    with torch.no_grad():
        base = model(inputs)
        with pytest.raises(ValueError, match="inside"):
            with make(model, v):
                assert not _no_hooks(model)
                raise ValueError("raised inside the block")
        assert _no_hooks(model)
        assert torch.equal(model(inputs), base)


def test_hook_removed_when_forward_raises(model):
    bad = torch.full((2, 10), 99, dtype=torch.long)  # ids beyond d_vocab make the embedding raise
    with pytest.raises(Exception):
        with add_vector(model, HOOK, torch.ones(32), 1.0):
            model(bad)
    assert _no_hooks(model)


def test_ablation_removes_component_and_ablate_add_sets_it(model, inputs):
    u = torch.randn(32, generator=torch.Generator().manual_seed(3))
    uh = u / u.norm()
    with torch.no_grad():
        with ablate_direction(model, "blocks.0.hook_resid_post", u, "all"):
            _, c = model.run_with_cache(inputs, names_filter=["blocks.0.hook_resid_post"])
        assert torch.allclose(c["blocks.0.hook_resid_post"] @ uh, torch.zeros(inputs.shape), atol=1e-4)
        with ablate_and_add(model, "blocks.0.hook_resid_post", u, 2.5 * uh, 1.0, "all"):
            _, c = model.run_with_cache(inputs, names_filter=["blocks.0.hook_resid_post"])
        assert torch.allclose(c["blocks.0.hook_resid_post"] @ uh, torch.full(inputs.shape, 2.5), atol=1e-4)


def test_bad_positions_raise(model, inputs):
    with pytest.raises(ValueError, match="positions"):
        with add_vector(model, HOOK, torch.ones(32), 1.0, "middle"):
            model(inputs)
    assert _no_hooks(model)


# ---- vectors -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("balance", [True, False])
def test_centroids_recover_planted_factor_directions(balance):
    rng = np.random.default_rng(0)
    d, n = 24, 6000
    UA, UB = rng.normal(size=(3, d)), 3 * rng.normal(size=(3, d))
    sA, sB = rng.integers(0, 3, n), rng.integers(0, 3, n)
    X = torch.tensor(UA[sA] + UB[sB] + 0.2 * rng.normal(size=(n, d)), dtype=torch.float64)
    joint = np.zeros((n, 9)); joint[np.arange(n), sA * 3 + sB] = 1.0
    for factor, U in ((0, UA), (1, UB)):
        bc = belief_centroids(X, joint, (3, 3), factor=factor, balance=balance, state_names=["S0", "S1", "SR"])
        idx = {name: k for k, name in enumerate(bc.names)}
        for s, t in [("S0", "S1"), ("S1", "SR"), ("SR", "S0")]:
            want = U["S0 S1 SR".split().index(t)] - U["S0 S1 SR".split().index(s)]
            err = np.linalg.norm(bc.vector(idx[s], idx[t]).numpy() - want) / np.linalg.norm(want)
            # balancing cancels the other factor exactly in expectation; unbalanced only up to sampling noise
            assert err < (0.03 if balance else 0.25), (factor, s, t, err)


def test_balancing_removes_a_correlated_other_factor():
    """With the other factor correlated to the steered one, only balanced centroids recover the planted direction."""
    rng = np.random.default_rng(1)
    d, n = 16, 6000
    UA, UB = rng.normal(size=(2, d)), rng.normal(size=(2, d))
    sA = rng.integers(0, 2, n)
    sB = np.where(rng.random(n) < 0.8, sA, 1 - sA)  # 80% agreement, like an SFP prior
    X = torch.tensor(UA[sA] + UB[sB], dtype=torch.float64)
    joint = np.zeros((n, 4)); joint[np.arange(n), sA * 2 + sB] = 1.0
    want = UA[1] - UA[0]
    bal = belief_centroids(X, joint, (2, 2), factor=0, balance=True)
    raw = belief_centroids(X, joint, (2, 2), factor=0, balance=False)
    i0, i1 = [int(np.argmax(r)) for r in bal.reps].index(0), [int(np.argmax(r)) for r in bal.reps].index(1)
    assert np.allclose(bal.vector(i0, i1).numpy(), want, atol=1e-8)
    assert np.linalg.norm(raw.vector(i0, i1).numpy() - want) > 0.3 * np.linalg.norm(UB[1] - UB[0])


def test_diff_in_means_projection_and_random_control():
    a, b = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0]])
    assert torch.allclose(diff_in_means(a, b), torch.tensor([2.0, 3.0]))
    v = torch.tensor([1.0, 2.0, 3.0])
    basis = torch.tensor([[1.0, 1.0, 0.0]])
    on, off = project(v, basis), project(v, basis, keep=False)
    assert torch.allclose(on + off, v) and torch.isclose(on @ off, torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(on, torch.tensor([1.5, 1.5, 0.0]))
    r = random_like(v, seed=0)
    assert torch.isclose(r.norm(), v.norm()) and torch.equal(r, random_like(v, seed=0))


def test_logit_contrasts_are_an_orthonormal_split():
    for shape in [(2, 2), (2, 3), (3, 2, 2)]:
        c = logit_contrasts(shape)
        Q = np.concatenate([c[k] for k in c])
        X = int(np.prod(shape))
        assert Q.shape == (X - 1, X) and np.allclose(Q @ Q.T, np.eye(X - 1)) and np.allclose(Q.sum(1), 0)
        # on a product distribution, adding a main effect of factor 0 to the logits moves factor 0's marginal only
        rng = np.random.default_rng(0)
        logits = sum(rng.normal(size=k).reshape([k if g == f else 1 for g in range(len(shape))]) for f, k in enumerate(shape))
        p = np.exp(logits - logits.max()).ravel(); p /= p.sum()
        q = p * np.exp(2.0 * c["main0"][0]); q /= q.sum()
        pm, qm = factor_marginals(p, shape), factor_marginals(q, shape)
        assert not np.allclose(pm[0], qm[0])
        for g in range(1, len(shape)): assert np.allclose(pm[g], qm[g], atol=1e-12)


# ---- metrics -------------------------------------------------------------------------------------------------

def test_kl_matches_hand_computed_values():
    assert np.isclose(kl([0.5, 0.5], [0.25, 0.75]), 0.5 * np.log(2.0) + 0.5 * np.log(2.0 / 3.0))
    assert np.isclose(kl([0.9, 0.1], [0.5, 0.5]), 0.9 * np.log(1.8) + 0.1 * np.log(0.2))
    assert kl([1.0, 0.0], [0.5, 0.5]) == pytest.approx(np.log(2.0))
    assert kl([0.3, 0.7], [0.3, 0.7]) == 0.0
    assert np.isfinite(kl([0.5, 0.5], [1.0, 0.0])) and kl([0.5, 0.5], [1.0, 0.0]) > 30  # floored, not infinite
    batch = kl(np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([[0.25, 0.75], [0.5, 0.5]]))
    assert batch.shape == (2,) and np.isclose(batch[1], np.log(2.0))


def test_steering_metrics_by_hand():
    # joint tokens (vA, vB) row-major: 00, 01, 10, 11
    orig = np.array([[0.25, 0.25, 0.25, 0.25]])
    steered = np.array([[0.05, 0.05, 0.45, 0.45]])  # factor A moved to [0.1, 0.9]; factor B unchanged
    m = steering_metrics(steered, orig, steered, orig, (2, 2), factor=0)
    want = 0.1 * np.log(0.1 / 0.5) + 0.9 * np.log(0.9 / 0.5)
    assert np.isclose(m["kl_steered_factor"], want) and np.isclose(m["kl_other_factor"], 0.0, atol=1e-15)
    assert np.isclose(m["kl_target_steered"], 0.0) and np.isclose(m["kl_steered_original"], want)
    assert np.isclose(m["kl_bayes_steered"], kl(orig, steered)[0])
    m1 = steering_metrics(steered, orig, steered, orig, (2, 2), factor=1)  # same numbers, roles of the factors swapped
    assert np.isclose(m1["kl_other_factor"], want) and np.isclose(m1["kl_steered_factor"], 0.0, atol=1e-15)


def test_swap_factor_keeps_the_other_factor():
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(3), 5), rng.dirichlet(np.ones(3), 5)
    joint = np.einsum("ni,nj->nij", a, b).reshape(5, 9)
    out = swap_factor(joint, (3, 3), 0, np.array([0.0, 1.0, 0.0]))
    assert np.allclose(out.reshape(5, 3, 3)[:, 1], b) and np.allclose(out.reshape(5, 3, 3)[:, [0, 2]], 0)
    out1 = swap_factor(joint, (3, 3), 1, np.array([1.0, 0.0, 0.0]))
    assert np.allclose(out1.reshape(5, 3, 3)[:, :, 0], a)


def test_forbidden_mass_is_zero_for_the_bayes_optimal_predictor():
    sfp = pp_z1r_sfp()
    toks = sfp.sample(2000, 12, seed=3)
    b = sfp.beliefs(toks, initial=True)
    post = np.stack([b[..., idx].sum(-1) for idx in sfp.sectors], -1)
    exact = b @ sfp.emission
    checked = 0
    for k, idx in enumerate(sfp.sectors):
        rows = post[..., k] > 1 - 1e-12  # positions where the sector is known
        if rows.any():
            assert forbidden_mass(exact[rows], allowed_tokens(sfp, idx)).max() == 0.0
            assert np.allclose(class_mass(exact[rows], allowed_tokens(sfp, idx)), 1.0)
            checked += 1
    assert checked == 4
    # and a predictor that ignores the sector does put mass on forbidden tokens
    uniform = np.full((1, 4), 0.25)
    assert forbidden_mass(uniform, allowed_tokens(sfp, sfp.sectors[0]))[0] == pytest.approx(0.75)


# ---- sweep ---------------------------------------------------------------------------------------------------

def test_sweep_table_shape_and_scale_zero(model, proc):
    data = collect(model, proc, proc.sample(600, 10, seed=4), [HOOK])
    cents = belief_centroids(data.acts[HOOK], data.beliefs, proc.state_shape, 1, state_names=["S0", "S1", "SR"])
    df = steering_sweep(model, proc, data, HOOK, cents, scales=(0.0, 1.0))
    assert len(df) == 12 and set(df.factor) == {1}
    assert set(zip(df.source, df.target)) == {(s, t) for s in ("S0", "S1", "SR") for t in ("S0", "S1", "SR") if s != t}
    z = df[df.scale == 0.0]
    assert (z.kl_steered_factor == 0).all() and (z.kl_other_factor == 0).all()
    s = summarize(df)
    assert list(s.scale) == [0.0, 1.0] and s.kl_steered_factor.iloc[1] > 0


def test_batched_scales_match_one_scale_at_a_time(model, proc):
    from sfp_nb.steering import steered_probs
    inputs = model_inputs(proc.sample(30, 10, seed=5), proc)
    v = torch.randn(32, generator=torch.Generator().manual_seed(6))
    many = steered_probs(model, inputs, HOOK, v, [0.0, 0.7, 2.0], proc.vocab_size, batch_size=16)
    assert many.shape == (3, 30, 4)
    for k, a in enumerate([0.0, 0.7, 2.0]):
        assert np.allclose(many[k], steered_probs(model, inputs, HOOK, v, a, proc.vocab_size), atol=1e-6)
    allpos = steered_probs(model, inputs, "blocks.0.hook_resid_post", v, [0.0, 1.0], proc.vocab_size, positions="all")
    assert allpos.shape == (3 - 1, 30, 4) and not np.allclose(allpos[0], allpos[1])


def test_conditional_sweep_uses_cell_vectors(model, proc):
    data = collect(model, proc, proc.sample(600, 10, seed=7), [HOOK])
    cents = belief_centroids(data.acts[HOOK], data.beliefs, proc.state_shape, 0, state_names=["S0", "S1", "SR"])
    plain = steering_sweep(model, proc, data, HOOK, cents, scales=(1.0,))
    cond = steering_sweep(model, proc, data, HOOK, cents, scales=(1.0,), conditional=True)
    assert len(plain) == len(cond) == 6
    assert not np.allclose(plain.kl_other_factor, cond.kl_other_factor)  # different vectors, different spillover
