"Tests of the SFP constructors and the belief decompositions beyond the notebooks' examples."
import numpy as np
import pytest

from sfp_nb.beliefs import belief_classes, factor_correlation, sector_posterior
from sfp_nb.processes import (PP_Z1R_PARTITION, direct_sum, factored, is_partition_preserving, leak,
                              pp_z1r, pp_z1r_sfp, rrxor, sector_states, sfp_from_blocks, sfp_from_factors, z1r)

def test_sfp_transfer_matrices_are_block_diagonal_and_leak_breaks_them():
    sfp = pp_z1r_sfp()
    assert is_partition_preserving(sfp.T, sfp.sectors)
    order = np.concatenate(sfp.sectors)
    for x in range(sfp.vocab_size):
        M = sfp.T[x][np.ix_(order, order)]
        edges = np.cumsum([0] + [len(s) for s in sfp.sectors])
        for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            assert not M[a:b, :a].any() and not M[a:b, b:].any()
    for eps in (1e-3, 0.1, 1.0):
        assert not is_partition_preserving(leak(sfp, eps).T, sfp.sectors)
    assert is_partition_preserving(leak(sfp, 0.0).T, sfp.sectors)

def test_leak_keeps_a_valid_process():
    "Leaking redraws the state from the stationary vector, so that vector stays stationary and words still sum to 1."
    base = pp_z1r_sfp()
    p = leak(base, 0.2)
    assert p.is_hmm and np.allclose(p.T.sum((0, 2)), 1)
    pi = p.stationary()
    assert np.allclose(pi @ p.T.sum(0), pi) and np.allclose(pi, base.stationary())
    words = np.array(np.meshgrid(*[range(p.vocab_size)] * 3)).reshape(3, -1).T
    assert np.isclose(p.prob(words).sum(), 1.0)
    toks, sec = p.sample(3000, 12, seed=1, return_sectors=True)
    post = sector_posterior(p.beliefs(toks), p.sectors)[:, -1]
    assert (post.argmax(-1) != sec).mean() > 0.05  # sequences leave the sector they started in

def test_sector_posterior_is_constant_in_expectation_and_sums_to_one():
    "The posterior over an invariant sector is a martingale: its mean over sampled prefixes is the prior."
    sfp = pp_z1r_sfp((0.1, 0.2, 0.3, 0.4))
    b = sfp.beliefs(sfp.sample(40_000, 6, seed=0), initial=True)
    post = sector_posterior(b, sfp.sectors)
    assert np.allclose(post.sum(-1), 1)
    assert np.allclose(post.mean(0), [0.1, 0.2, 0.3, 0.4], atol=0.01)

def test_blocks_need_not_be_kronecker_products():
    "A sector's dynamics may be any process on its states: here Z1R x Z1R's 9 states get RRXOR-free Mess-like dynamics."
    rng = np.random.default_rng(0)
    parts = [[[0], [1, 2]], [[0, 1, 2]]]  # factor A split 1 + 2, factor B whole
    blocks = {}
    for sigma in [(0, 0), (1, 0)]:
        n = len(sector_states(parts, sigma))
        T = rng.dirichlet(np.ones(2 * n), size=n).reshape(n, 2, n).transpose(1, 0, 2)
        blocks[sigma] = T
    p = sfp_from_blocks(parts, blocks, [0.25, 0.75])
    assert p.state_shape == (3, 3) and is_partition_preserving(p.T, p.sectors)
    assert np.isclose(p.eta[p.sectors[0]].sum(), 0.25)

def test_constructor_errors():
    parts = [PP_Z1R_PARTITION] * 2
    with pytest.raises(ValueError, match="4 entries"): sfp_from_factors([pp_z1r(), pp_z1r()], parts, [0.5, 0.5])
    with pytest.raises(ValueError, match="probability vector"): sfp_from_factors([pp_z1r(), pp_z1r()], parts, [0.5, 0.5, 0.5, -0.5])
    with pytest.raises(ValueError, match="does not preserve"): sfp_from_factors([z1r(), pp_z1r()], parts, [0.25] * 4)
    with pytest.raises(ValueError, match="one alphabet"): direct_sum([z1r(), rrxor(), factored(z1r(), z1r())], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="exactly the sectors"): sfp_from_blocks([[[0], [1]]], {(0,): np.ones((1, 1, 1))}, [0.5, 0.5])
    with pytest.raises(ValueError, match="at least two"): factored(z1r())

def test_factor_correlation_tracks_the_prior():
    "Mutual information of the initial joint state: zero for a product prior, positive otherwise."
    parts = [PP_Z1R_PARTITION] * 2
    prod = sfp_from_factors([pp_z1r(), pp_z1r()], parts, np.outer([0.3, 0.7], [0.6, 0.4]).ravel())
    corr = pp_z1r_sfp((0.5, 0.0, 0.0, 0.5))
    assert abs(factor_correlation(prod.eta, prod.state_shape)["mutual_information"]) < 1e-12
    # with perfectly correlated blocks of probability 1/2 each, I(A;B) is exactly the 1 bit of block identity
    assert np.isclose(factor_correlation(corr.eta, corr.state_shape)["mutual_information"], 1.0)

def test_belief_classes_round_to_1e6():
    b = np.array([[0.5, 0.5], [0.5 + 4e-7, 0.5 - 4e-7], [0.5 + 2e-6, 0.5 - 2e-6]])
    labels, reps = belief_classes(b)
    assert labels[0] == labels[1] != labels[2] and len(reps) == 2


def test_registries_refuse_a_second_family_but_accept_a_redefinition():
    "A notebook cell that defines and registers a family again (re-run, or exported and imported) is no conflict."
    from sfp_nb.processes import PROCESS_FAMILIES, register_process
    def twin_family(): return z1r()
    register_process("test_twin")(twin_family)
    def twin_family(): return pp_z1r()  # the same name defined again: replaces the first
    register_process("test_twin")(twin_family)
    assert PROCESS_FAMILIES["test_twin"] is twin_family
    def other(): return z1r()
    with pytest.raises(ValueError, match="registered twice"): register_process("test_twin")(other)
    del PROCESS_FAMILIES["test_twin"]
