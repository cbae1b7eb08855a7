"""Tests of sfp_nb.steering (positions, vectors, metrics, sweeps) and the steering-table experiments (tiny models only)."""
import dataclasses, json
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge
import transformer_lens.model_bridge.sources  # noqa: F401  (registers boot_native)

from sfp_nb.beliefs import factor_beliefs
from sfp_nb.core import to_json
from sfp_nb.interventions import FINAL_NORM, ablate_and_add, ablate_direction, add_vector, resid, upto
from sfp_nb.processes import factored, pp_z1r_sfp, z1r
from sfp_nb.steering import (allowed_tokens, belief_centroids, class_centroids, class_mass, collect, diff_in_means,
                             factor_marginals, forbidden_mass, js, kl, logit_contrasts, marginal_gradients, project,
                             random_like, readout_gradients, row_positions, steered_probs, steering_metrics,
                             steering_sweep, summarize, swap_factor, token_probs, tv)
from sfp_nb.studies.steering_tables import PartitionConfig, Route, SteeringConfig, sector_blocks, steering_experiment
from sfp_nb.training import TrainConfig, model_inputs

HOOK = resid(1)
LN = FINAL_NORM
NAMES = ["S0", "S1", "SR"]


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


# ---- one position: edited and read -------------------------------------------------------------------------

@pytest.mark.parametrize("hook", [HOOK, resid(0), LN])
def test_edit_and_read_at_the_same_per_row_positions(model, inputs, hook):
    """The read-out at k_i moves and equals a hand-made pass; earlier positions do not move, so reading there would fail."""
    v = torch.randn(32, generator=torch.Generator().manual_seed(1))
    k = torch.tensor([1, 9, 4, 7, 2, 9, 5, 3, 8, 6, 1, 2, 3, 4, 5, 6])
    got = steered_probs(model, inputs, hook, v, 2.0, 4, positions=k)
    rows = torch.arange(len(k))
    with torch.no_grad():
        base = model(inputs)
        with add_vector(model, hook, v, 2.0, k):
            edited = model(inputs)
    assert np.allclose(got, token_probs(edited[rows, k], 4), atol=1e-6)
    unsteered = token_probs(base[rows, k], 4)
    assert (np.abs(got - unsteered).max(1) > 1e-4).all()  # every row's read-out moved
    for i, ki in enumerate(k.tolist()):
        assert torch.equal(edited[i, :ki], base[i, :ki])  # an earlier read-out would see nothing
    assert _no_hooks(model)


def test_edit_earlier_positions_too(model, inputs):
    v = torch.randn(32, generator=torch.Generator().manual_seed(2))
    k = torch.full((len(inputs),), 6)
    got = steered_probs(model, inputs, resid(0), v, 1.5, 4, positions=k, earlier=True)
    with torch.no_grad(), add_vector(model, resid(0), v, 1.5, upto(k, len(k), inputs.shape[1])):
        want = token_probs(model(inputs)[:, 6], 4)
    only = steered_probs(model, inputs, resid(0), v, 1.5, 4, positions=6)
    assert np.allclose(got, want, atol=1e-6) and not np.allclose(got, only, atol=1e-4)


def test_scale_zero_and_batched_scales(model, proc):
    x = model_inputs(proc.sample(30, 10, seed=5), proc)
    v = torch.randn(32, generator=torch.Generator().manual_seed(6))
    many = steered_probs(model, x, HOOK, v, [0.0, 0.7, 2.0], proc.vocab_size, batch_size=16)
    assert many.shape == (3, 30, 4)
    with torch.no_grad():
        assert np.allclose(many[0], token_probs(model(x)[:, -1], 4), atol=1e-6)
    for i, a in enumerate([0.0, 0.7, 2.0]):
        assert np.allclose(many[i], steered_probs(model, x, HOOK, v, a, proc.vocab_size), atol=1e-6)
    per_row = torch.randn(30, 32, generator=torch.Generator().manual_seed(7))
    one = steered_probs(model, x, HOOK, per_row, [1.0], proc.vocab_size)[0]
    assert np.allclose(one[3], steered_probs(model, x[3:4], HOOK, per_row[3], 1.0, proc.vocab_size)[0], atol=1e-6)


def test_positions_must_select_one_per_row(model, inputs):
    with pytest.raises(ValueError, match="one position per row"):
        row_positions("all", 4, 10)
    with pytest.raises(ValueError, match="positions"):
        steered_probs(model, inputs, HOOK, torch.ones(32), 1.0, 4, positions="middle")
    with pytest.raises(ValueError, match="vectors for"):
        steered_probs(model, inputs, HOOK, torch.ones(3, 32), 1.0, 4)
    assert _no_hooks(model)


def test_collect_reads_the_positions_it_is_given(model, proc):
    toks = proc.sample(50, 10, seed=9)
    k = torch.as_tensor(np.random.default_rng(0).integers(0, 10, 50))
    d = collect(model, proc, toks, [HOOK], positions=k)
    assert torch.equal(d.positions, k)
    assert np.allclose(d.beliefs, proc.beliefs(toks, initial=True)[np.arange(50), k.numpy()])
    with torch.no_grad():
        assert np.allclose(d.probs, token_probs(model(d.inputs)[torch.arange(50), k], 4), atol=1e-6)
    sub = d.subset(np.arange(50) % 3 == 0)
    assert len(sub) == 17 and torch.equal(sub.positions, k[::3])


# ---- the interventions steering relies on (sfp_nb.interventions) --------------------------------------------

@pytest.mark.parametrize("positions", ["final", "all"])
@pytest.mark.parametrize("hook", [HOOK, resid(0, "pre"), LN])
def test_scale_zero_changes_nothing_exactly(model, inputs, hook, positions):
    v = torch.randn(32, generator=torch.Generator().manual_seed(1)) * 100
    with torch.no_grad():
        base = model(inputs)
        with add_vector(model, hook, v, 0.0, positions):
            same = model(inputs)
    assert torch.equal(base, same) and _no_hooks(model)


@pytest.mark.parametrize("make", [
    lambda m, v: add_vector(m, HOOK, v, 1.0),
    lambda m, v: ablate_direction(m, HOOK, v),
    lambda m, v: ablate_and_add(m, HOOK, v, v, 1.0, "all"),
])
def test_hooks_removed_after_an_exception(model, inputs, make):
    v = torch.ones(32)
    with torch.no_grad():
        base = model(inputs)
        with pytest.raises(ValueError, match="inside"):
            with make(model, v):
                assert not _no_hooks(model)
                raise ValueError("raised inside the block")
        assert _no_hooks(model) and torch.equal(model(inputs), base)
    bad = torch.full((2, 10), 99, dtype=torch.long)  # ids beyond d_vocab make the forward raise
    with pytest.raises(Exception):
        with add_vector(model, HOOK, torch.ones(32), 1.0):
            model(bad)
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
        bc = belief_centroids(X, joint, (3, 3), factor=factor, balance=balance, state_names=NAMES)
        idx = {name: k for k, name in enumerate(bc.names)}
        for s, t in [("S0", "S1"), ("S1", "SR"), ("SR", "S0")]:
            want = U[NAMES.index(t)] - U[NAMES.index(s)]
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


def test_balanced_centroid_is_the_frequency_weighted_mean_of_present_cells():
    """The docstring's definition, by hand, including a class with an empty cell (that cell drops out)."""
    X = torch.tensor([[0.0], [2.0], [10.0], [4.0], [6.0], [6.0]], dtype=torch.float64)
    labels = np.array([0, 0, 0, 1, 1, 1])
    other = np.array([0, 0, 1, 0, 0, 0])  # class 1 has no row with other = 1
    cents, counts = class_centroids(X, labels, other)
    w = np.array([5, 1]) / 6  # batch frequency of other = 0, 1
    assert np.isclose(cents[0, 0].item(), w[0] * 1.0 + w[1] * 10.0)  # cells: mean(0, 2) = 1 and 10
    assert np.isclose(cents[1, 0].item(), 16 / 3)  # only cell (1, 0) present: its plain mean
    assert counts.tolist() == [3, 3]
    plain, _ = class_centroids(X, labels)
    assert np.allclose(plain[:, 0].numpy(), [4.0, 16 / 3])


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


def _softmax(l):
    p = np.exp(l - l.max())
    return p / p.sum()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=6, max_size=6), st.floats(0.5, 3.0), st.floats(-3, 3).filter(lambda x: abs(x) > 0.5))
def test_main_effect_edit_moves_the_other_marginal_only_through_an_interaction(params, gamma, step):
    """l_ab = alpha_a + beta_b (+ gamma * interaction): an edit along A's main effect, orthogonal to B's main effect
    and to the interaction, leaves B's marginal exactly unchanged on a product joint and moves it on a non-product one."""
    shape = (2, 3)
    c = logit_contrasts(shape)
    product = np.add.outer(params[:2], params[2:5]).ravel()
    inter = product + gamma * c["interaction"][0]
    edit = step * c["main0"][0]
    assert np.allclose(edit @ np.concatenate([c["main1"], c["interaction"]]).T, 0)  # orthogonal to B and interaction
    mB = lambda l: factor_marginals(_softmax(l), shape)[1]
    assert np.allclose(mB(product + edit), mB(product), atol=1e-12)
    assert np.abs(mB(inter + edit) - mB(inter)).max() > 1e-4


def test_readout_projection_after_final_ln_fixes_contrasts_not_the_marginal(model, inputs):
    """After the final LN the logits are affine: projecting off B's main-effect and interaction readout gradients
    holds those contrasts fixed exactly, yet B's marginal moves (the random model's output has an interaction)."""
    c = logit_contrasts((2, 2))
    C = np.concatenate([c["main1"], c["interaction"]])
    x = inputs[:1]  # one sequence: the mean gradient is that sequence's own
    G = readout_gradients(model, x, LN, C)
    v = project(torch.randn(32, generator=torch.Generator().manual_seed(4)) * 3, G, keep=False)
    base, moved = steered_probs(model, x, LN, v, [0.0, 1.0], 4)
    lb, lm = np.log(base[0]), np.log(moved[0])
    assert np.allclose(C @ lm, C @ lb, atol=1e-4)  # B's main effect and the interaction held fixed
    assert np.abs(c["main0"] @ (lm - lb)).max() > 1e-2  # A's main effect moved
    assert np.abs(factor_marginals(moved, (2, 2))[1] - factor_marginals(base, (2, 2))[1]).max() > 1e-3
    # to first order, projecting off the gradient of B's marginal itself does hold the marginal
    M = marginal_gradients(model, x, LN, (2, 2), 1)
    r = torch.randn(32, generator=torch.Generator().manual_seed(5)) * 1e-2
    raw, off = (steered_probs(model, x, LN, w, 1.0, 4) for w in (r, project(r, M, keep=False)))
    dB = lambda p: np.abs(factor_marginals(p, (2, 2))[1] - factor_marginals(base, (2, 2))[1]).max()
    assert dB(off) < 0.05 * dB(raw)


# ---- metrics -------------------------------------------------------------------------------------------------

def test_kl_matches_hand_computed_values():
    assert np.isclose(kl([0.5, 0.5], [0.25, 0.75]), 0.5 * np.log(2.0) + 0.5 * np.log(2.0 / 3.0))
    assert np.isclose(kl([0.9, 0.1], [0.5, 0.5]), 0.9 * np.log(1.8) + 0.1 * np.log(0.2))
    assert kl([1.0, 0.0], [0.5, 0.5]) == pytest.approx(np.log(2.0))
    assert kl([0.3, 0.7], [0.3, 0.7]) == 0.0
    assert np.isfinite(kl([0.5, 0.5], [1.0, 0.0])) and kl([0.5, 0.5], [1.0, 0.0]) > 30  # floored, not infinite
    batch = kl(np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([[0.25, 0.75], [0.5, 0.5]]))
    assert batch.shape == (2,) and np.isclose(batch[1], np.log(2.0))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=3, max_size=3), st.lists(st.floats(0, 1), min_size=3, max_size=3))
def test_bounded_measures_are_bounded_and_symmetric(a, b):
    p, q = np.asarray(a) + 1e-9, np.asarray(b) + 1e-9
    p, q = p / p.sum(), q / q.sum()
    assert 0 <= tv(p, q) <= 1 + 1e-12 and np.isclose(tv(p, q), tv(q, p))
    assert -1e-12 <= js(p, q) <= np.log(2) + 1e-12 and np.isclose(js(p, q), js(q, p))
    assert js(p, q) <= np.log(2) * tv(p, q) + 1e-12  # JS <= ln 2 * TV


def test_steering_metrics_by_hand():
    # joint tokens (vA, vB) row-major: 00, 01, 10, 11
    orig = np.array([[0.25, 0.25, 0.25, 0.25]])
    steered = np.array([[0.05, 0.05, 0.45, 0.45]])  # factor A moved to [0.1, 0.9]; factor B unchanged
    m = steering_metrics(steered, orig, steered, orig, (2, 2), factor=0)
    want = 0.1 * np.log(0.1 / 0.5) + 0.9 * np.log(0.9 / 0.5)
    assert np.isclose(m["kl_steered_factor"], want) and np.isclose(m["kl_other_factor"], 0.0, atol=1e-15)
    assert np.isclose(m["tv_steered_factor"], 0.4) and np.isclose(m["js_other_factor"], 0.0, atol=1e-15)
    assert np.isclose(m["kl_target_steered"], 0.0) and np.isclose(m["kl_steered_original"], want)
    assert np.isclose(m["kl_bayes_steered"], kl(orig, steered)[0]) and np.isclose(m["tv_bayes_factor"], 0.4)
    m1 = steering_metrics(steered, orig, steered, orig, (2, 2), factor=1)  # roles of the factors swapped
    assert np.isclose(m1["kl_other_factor"], want) and np.isclose(m1["tv_other_factor"], 0.4)


def test_residual_mass_inflates_kl_but_not_tv():
    """Lifting a 1e-6 probability to 1e-2 in the other factor: KL spillover ~ 0.08 nats, TV only 0.01."""
    orig = np.array([[0.5 * (1 - 1e-6), 0.5 * 1e-6, 0.5 * (1 - 1e-6), 0.5 * 1e-6]])
    steered = np.array([[0.495, 0.005, 0.495, 0.005]])
    m = steering_metrics(steered, orig, steered, steered, (2, 2), factor=0)
    assert np.isclose(m["tv_other_factor"], 0.01 - 1e-6) and m["kl_other_factor"] > 7 * m["tv_other_factor"]


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
    uniform = np.full((1, 4), 0.25)  # a predictor that ignores the sector puts mass on forbidden tokens
    assert forbidden_mass(uniform, allowed_tokens(sfp, sfp.sectors[0]))[0] == pytest.approx(0.75)


# ---- sweep ---------------------------------------------------------------------------------------------------

def test_sweep_table_shape_and_scale_zero(model, proc):
    data = collect(model, proc, proc.sample(600, 10, seed=4), [HOOK])
    cents = belief_centroids(data.acts[HOOK], data.beliefs, proc.state_shape, 1, state_names=NAMES)
    df = steering_sweep(model, proc, data, HOOK, cents, scales=(0.0, 1.0))
    assert len(df) == 12 and set(df.factor) == {1}
    assert set(zip(df.source, df.target)) == {(s, t) for s in NAMES for t in NAMES if s != t}
    z = df[df.scale == 0.0]
    assert (z.kl_steered_factor == 0).all() and (z.kl_other_factor == 0).all() and (z.tv_other_factor == 0).all()
    s = summarize(df)
    assert list(s.scale) == [0.0, 1.0] and s.kl_steered_factor.iloc[1] > 0
    assert np.isclose(s.specificity_tv.iloc[1], df[df.scale == 1].tv_steered_factor.mean() / df[df.scale == 1].tv_other_factor.mean())


def test_conditional_sweep_uses_each_rows_cell_vector(model, proc):
    """The conditional sweep's numbers equal a hand computation that adds c(t, b) - c(s, b) to each row in cell b."""
    data = collect(model, proc, proc.sample(800, 10, seed=7), [HOOK])
    c = belief_centroids(data.acts[HOOK], data.beliefs, proc.state_shape, 0, state_names=NAMES)
    cond = steering_sweep(model, proc, data, HOOK, c, scales=(1.0,), conditional=True)
    s, t = c.names.index("S0"), c.names.index("S1")
    row = cond[(cond.source == "S0") & (cond.target == "S1")].iloc[0]
    marg = factor_beliefs(data.beliefs, proc.state_shape)
    rows = np.flatnonzero(np.isclose(marg[0][:, 0], 1))  # factor A in S0
    b = np.array([np.flatnonzero((np.abs(c.other_reps - np.round(m, 6)) < 5e-7).all(1))[0] for m in marg[1][rows]])
    V = torch.stack([c.cells[t, bi] - c.cells[s, bi] for bi in b])
    # rows whose target cell (A in S1, same B class) exists in the batch
    has_target = np.array([((c.labels == t) & (c.other == bi)).any() for bi in b]) & torch.isfinite(V).all(1).numpy()
    keep = rows[has_target]
    p = steered_probs(model, data.inputs[keep], HOOK, V[has_target], 1.0, 4, data.positions[keep])
    mA, mA0 = factor_marginals(p, (2, 2))[0], factor_marginals(data.probs[keep], (2, 2))[0]
    assert row.n_used == len(keep)
    assert np.isclose(row.kl_steered_factor, kl(mA, mA0).mean(), rtol=1e-6)
    assert np.isclose(row.vector_norm, V[has_target].norm(dim=1).mean().item(), rtol=1e-5)
    # the pooled vector gives other numbers: the cells differ from their average on this model
    plain = steering_sweep(model, proc, data, HOOK, c, scales=(1.0,), pairs=[(s, t)])
    assert not np.isclose(plain.kl_steered_factor.iloc[0], row.kl_steered_factor, rtol=1e-3)


# ---- experiment configs --------------------------------------------------------------------------------------

def test_config_bad_input():
    tiny = TrainConfig(process="z1r_x_z1r", steps=5, d_model=16, d_mlp=32)
    with pytest.raises(ValueError, match="vector must be one of"):
        SteeringConfig(tiny, vector="sideways")
    with pytest.raises(ValueError, match="n_sequences"):
        SteeringConfig(tiny, n_sequences=0)
    with pytest.raises(ValueError, match="steered factor's block"):
        PartitionConfig(tiny, routes=(Route(0, "V00", "V11"),))
    with pytest.raises(ValueError, match="sector name"):
        sector_blocks("P10", 2)
    cfg = SteeringConfig(tiny, scales=[0, 1])
    assert cfg.scales == (0.0, 1.0) and SteeringConfig(**json.loads(to_json(dataclasses.asdict(cfg)))) == cfg
    pc = PartitionConfig(tiny)
    assert PartitionConfig(**json.loads(to_json(dataclasses.asdict(pc)))) == pc


def test_experiment_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path))
    from sfp_nb.experiments import record_path, run_experiment
    cfg = SteeringConfig(TrainConfig(process="z1r_x_z1r", steps=20, d_model=16, d_mlp=32, seed=3), n_sequences=200,
                         scales=(0.0, 1.0), factors=(0,))
    first = run_experiment(steering_experiment, cfg)
    assert record_path(steering_experiment, cfg).exists()
    again = run_experiment(steering_experiment, cfg, recompute=True)
    assert first["pairs"] == again["pairs"] and {r["factor"] for r in first["pairs"]} == {0}
