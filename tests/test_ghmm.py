"Property, bad-input and determinism tests of the GHMM core (the notebooks hold the narrative tests)."
import itertools

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from sfp_nb.ghmm import GHMM
from sfp_nb.processes import z1r, mess3, rrxor, even_process, pp_z1r, factored, pp_z1r_sfp

# -- random processes -------------------------------------------------------------------------

def random_hmm(seed: int, S: int, X: int, sparse: bool = True) -> GHMM:
    "A random HMM; with `sparse`, about a third of the transitions are forbidden (so some words are impossible)."
    rng = np.random.default_rng(seed)
    T = rng.dirichlet(np.ones(S * X), size=S).reshape(S, X, S).transpose(1, 0, 2)
    if sparse:
        T = T * (rng.random(T.shape) > 0.33)
        T[0, :, 0] += 1e-3  # keep every row alive
        T = T / T.sum((0, 2))[None, :, None]
    return GHMM.hmm(T, rng.dirichlet(np.ones(S)))

def similar_ghmm(p: GHMM, seed: int) -> GHMM:
    "The same process in another basis: T'(x) = A^-1 T(x) A has negative entries but equal word probabilities."
    rng = np.random.default_rng(seed)
    A = np.eye(p.n_states) + 0.5 * rng.standard_normal((p.n_states, p.n_states))
    Ai = np.linalg.inv(A)
    return GHMM(np.einsum("ij,xjk,kl->xil", Ai, p.T, A), p.eta @ A, Ai @ p.one)

hmms = st.builds(random_hmm, st.integers(0, 2**31), st.integers(1, 4), st.integers(1, 3))
words = st.lists(st.integers(0, 2), min_size=1, max_size=5)

def brute_force(p: GHMM, word):
    "Pr(w) and the posterior over the final hidden state, summing over every hidden path."
    S = p.n_states
    post = np.zeros(S)
    for path in itertools.product(range(S), repeat=len(word) + 1):
        w = p.eta[path[0]] * np.prod([p.T[x, a, b] for x, a, b in zip(word, path[:-1], path[1:])])
        post[path[-1]] += w
    return post.sum(), post

# -- beliefs and probabilities ----------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(hmms, words)
@example(random_hmm(329, 1, 2), [0, 0, 0, 0, 0])  # Pr(w) = 4.6e-15: tiny, yet possible
def test_beliefs_equal_brute_force_bayes(p, word):
    "Impossible means Pr(w) = 0 exactly (every hidden path has a zero factor), in the test and the library."
    word = [x % p.vocab_size for x in word]
    pw, post = brute_force(p, word)
    assert np.isclose(p.prob(word), pw, atol=1e-12)
    if pw > 0:
        assert np.allclose(p.beliefs([word])[0, -1], post / pw, atol=1e-9)
    else:
        with pytest.raises(ValueError, match="impossible"): p.beliefs([word])

@settings(max_examples=40, deadline=None)
@given(hmms, words, st.integers(0, 2**31))
def test_ghmm_beliefs_equal_direct_product(p, word, seed):
    "For a GHMM with negative entries: prob is basis-free, beliefs equal <eta|T(w) / <eta|T(w)|1>>."
    g = similar_ghmm(p, seed)
    word = [x % p.vocab_size for x in word]
    direct = g.eta.copy()
    for x in word: direct = direct @ g.T[x]
    assert np.isclose(g.prob(word), p.prob(word), atol=1e-9)
    assert np.isclose(direct @ g.one, p.prob(word), atol=1e-9)
    if p.prob(word) > 1e-9:
        assert np.allclose(g.beliefs([word])[0, -1], direct / (direct @ g.one), atol=1e-6)

@pytest.mark.parametrize("p", [z1r(), mess3(), rrxor(), even_process(), pp_z1r(0.3), pp_z1r_sfp(), random_hmm(0, 4, 3)],
                         ids=lambda p: p.name)
def test_word_probabilities_sum_to_one(p):
    for L in range(1, 5):
        allw = np.array(list(itertools.product(range(p.vocab_size), repeat=L)))
        assert np.isclose(p.prob(allw).sum(), 1.0, atol=1e-12)

def test_next_token_probs_are_conditionals():
    p = random_hmm(1, 3, 3, sparse=False)
    tokens = p.sample(50, 6, seed=2)
    ntp = p.next_token_probs(tokens)
    assert np.allclose(ntp.sum(-1), 1)
    picked = np.take_along_axis(ntp, tokens[..., None], -1)[..., 0]
    assert np.allclose(np.log(picked).sum(1), p.log_prob(tokens))

@settings(max_examples=25, deadline=None)
@given(hmms, hmms, st.integers(0, 2**31))
def test_factored_beliefs_are_products(p, q, seed):
    from sfp_nb.beliefs import factor_beliefs
    joint = factored(p, q)
    tokens = joint.sample(20, 6, seed)
    b = joint.beliefs(tokens)
    bp, bq = p.beliefs(tokens // q.vocab_size), q.beliefs(tokens % q.vocab_size)
    assert np.allclose(b, (bp[..., :, None] * bq[..., None, :]).reshape(b.shape), atol=1e-9)
    assert all(np.allclose(a, c) for a, c in zip(factor_beliefs(b, joint.state_shape), (bp, bq)))

def test_long_sequences_stay_normalised():
    p = mess3(0.05, 0.85)
    tokens = p.sample(8, 20_000, seed=0)
    b = p.beliefs(tokens)
    assert np.isfinite(b).all() and np.allclose(b.sum(-1), 1)
    lp = p.log_prob(tokens)
    assert np.isfinite(lp).all() and (lp < -1000).all()  # Pr(w) itself underflows; its log does not

# -- sampling -----------------------------------------------------------------------------------

def test_sampled_word_frequencies_match_prob():
    p = factored(z1r(), even_process())
    n, L = 200_000, 3
    tokens = p.sample(n, L, seed=123)
    codes = np.ravel_multi_index(tokens.T, (p.vocab_size,) * L)
    counts = np.bincount(codes, minlength=p.vocab_size ** L)
    allw = np.array(list(itertools.product(range(p.vocab_size), repeat=L)))
    expected = n * p.prob(allw)
    assert (counts[expected == 0] == 0).all()
    m = expected > 0
    chi2 = ((counts[m] - expected[m]) ** 2 / expected[m]).sum()
    dof = m.sum() - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof)  # a 5-sigma band of the chi-square statistic

def test_same_seed_same_samples_and_beliefs():
    p = pp_z1r_sfp()
    a, b = p.sample(100, 10, seed=7), p.sample(100, 10, seed=7)
    assert (a == b).all() and np.array_equal(p.beliefs(a), p.beliefs(b))
    assert not (a == p.sample(100, 10, seed=8)).all()
    gen = np.random.default_rng(3)
    assert (p.sample(5, 4, gen) != p.sample(5, 4, gen)).any()  # a generator advances

# -- entropy rate -------------------------------------------------------------------------------

@pytest.mark.parametrize("p, h", [(z1r(), 1/3), (even_process(), 2/3), (rrxor(), 2/3),
                                  (factored(z1r(), z1r()), 2/3), (mess3(0.5, 1/3), np.log2(3))])
def test_entropy_rate_exact(p, h):
    assert abs(p.entropy_rate(tol=1e-9) - h) < 1e-9

def test_entropy_rate_mess3_within_myopic_bounds():
    p = mess3(0.05, 0.85)
    h, fine = p.entropy_rate(tol=1e-3), p.entropy_rate(tol=1e-6)
    assert abs(h - fine) <= 0.5e-3 + 1e-6  # the midpoint of a bracket narrower than tol
    # H(X_L | X_<L) from exhaustive enumeration is an upper bound that decreases to h
    L = 7
    w = np.array(list(itertools.product(range(3), repeat=L)))
    lp = p.log_prob(w) / np.log(2)
    wp = np.array(list(itertools.product(range(3), repeat=L - 1)))
    block = lambda lp_: -(np.exp2(lp_) * lp_).sum()
    upper = block(lp) - block(p.log_prob(wp) / np.log(2))
    assert fine <= upper + 1e-6 and upper - fine < 0.01
    assert abs(similar_ghmm(p, 0).entropy_rate(tol=1e-5) - h) < 2e-3  # the GHMM path agrees

# -- bad input ----------------------------------------------------------------------------------

Z = z1r().T

@pytest.mark.parametrize("T, match", [
    (np.ones((3, 3)), "shape"),
    (np.ones((2, 3, 4)), "shape"),
    (np.zeros((0, 2, 2)), "shape"),
    (np.where(np.arange(18).reshape(2, 3, 3) == 4, np.nan, Z), "NaN or infinite"),
    (np.where(np.arange(18).reshape(2, 3, 3) == 4, np.inf, Z), "NaN or infinite"),
    (0.5 * Z, "no eigenvalue 1"),
])
def test_bad_transfer_matrices(T, match):
    with pytest.raises(ValueError, match=match): GHMM(T)

def test_hmm_rejects_negative_entries_a_ghmm_accepts():
    T = np.array([[[1.2, -0.2], [0.0, 1.0]]])
    assert not GHMM(T).is_hmm
    with pytest.raises(ValueError, match="non-negative"): GHMM.hmm(T)
    with pytest.raises(ValueError, match="row-stochastic"): GHMM.hmm(np.array([[[0.5, 0.0], [0.0, 0.5]]]))

@pytest.mark.parametrize("eta, match", [
    (np.ones(2) / 2, "length 3"),
    (np.array([0.5, 0.5, 0.5]), "not normalised"),
    (np.array([np.nan, 0.5, 0.5]), "NaN"),
    (np.array([1.5, -0.25, -0.25]), "negative"),
])
def test_bad_eta(eta, match):
    with pytest.raises(ValueError, match=match): GHMM(Z, eta)

def test_bad_one_and_tokens():
    with pytest.raises(ValueError, match="right eigenvector"): GHMM(Z, one=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 2\)"): z1r().beliefs([[0, 2]])
    with pytest.raises(ValueError, match="integers"): z1r().beliefs(np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="shape"): z1r().beliefs(np.zeros((2, 2, 2), dtype=int))
    with pytest.raises(ValueError, match="non-negative"): z1r().sample(-1, 3)

def test_structure_metadata_is_checked():
    with pytest.raises(ValueError, match="state_shape"): GHMM(Z, state_shape=(2, 2))
    with pytest.raises(ValueError, match="partition"): GHMM(Z, sectors=[[0, 1], [1, 2]])

@settings(max_examples=40, deadline=None)
@given(hmms, words, st.integers(0, 2**31))
def test_ghmm_without_one_is_normalised_by_eta(p, word, seed):
    "Given T and eta but not |1>>, a non-stochastic T gets |1>> scaled so that <eta|1>> = 1 (eqs. 2-3)."
    g = similar_ghmm(p, seed)
    if np.allclose(g.T.sum(0).sum(1), 1.0) or len(np.linalg.eigvals(g.T.sum(0))[np.isclose(np.linalg.eigvals(g.T.sum(0)), 1)]) != 1:
        return  # stochastic by chance, or a degenerate eigenvalue 1 (then `one` must be given)
    h = GHMM(g.T, g.eta)
    word = [x % p.vocab_size for x in word]
    assert np.isclose(h.eta @ h.one, 1.0) and np.isclose(h.prob(word), p.prob(word), atol=1e-9)

def test_eta_orthogonal_to_one_is_refused():
    g = similar_ghmm(z1r(), 3)
    eta = np.linalg.svd(g.one[None])[2][1]  # a vector with <eta|1>> = 0
    with pytest.raises(ValueError, match="cannot be normalised"): GHMM(g.T, eta)

def test_sampled_sectors_follow_the_prior_and_explain_the_sequence():
    p = pp_z1r_sfp((0.4, 0.1, 0.1, 0.4))
    toks, sec = p.sample(4000, 12, seed=5, return_sectors=True)
    assert np.allclose(np.bincount(sec, minlength=4) / 4000, [0.4, 0.1, 0.1, 0.4], atol=0.025)
    b = p.beliefs(toks, initial=True)
    post = np.stack([b[..., idx].sum(-1) for idx in p.sectors], -1)
    assert (post[np.arange(4000), :, sec] > 0).all()  # the labelled sector never becomes impossible
    assert (p.sample(4000, 12, seed=5) == toks).all()  # the labels do not change the draws
