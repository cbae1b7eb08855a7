"Tests of the EM world family beyond the notebook's examples: validity over settings, partitions, restrictions, bad input."
import json, subprocess, sys
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sfp_nb.emworld import (HEADERS, LABELS, decode, em_layout, em_world, persona_posterior, prefix_beliefs,
                            sample_paths, sector_next_probs, task_posterior, task_revealing, token_tasks)
from sfp_nb.processes import ProcessSpec, is_partition_preserving, loss_mask, make_process, z1r

settings_strategy = st.fixed_dictionaries({
    "tasks": st.lists(st.text(alphabet="01", min_size=2, max_size=5), min_size=1, max_size=3).map(tuple),
    "switch": st.sampled_from([0.0, 0.1, 0.5]),
    "persona_persists": st.booleans(),
    "style": st.sampled_from(["off", "shared", "task"]),
    "alphabets": st.sampled_from(["disjoint", "shared"]),
    "mix": st.sampled_from([0.0, 0.2, 0.5]),
    "persona_states": st.integers(1, 2),
    "n_aligned": st.integers(1, 2),
    "misaligned_per_task": st.booleans(),
    "corr": st.sampled_from([0.0, 0.5]),
    "headers": st.booleans(),
})

def _build(s):
    K = len(s["tasks"])
    rules = tuple("10" if k % 2 == 0 else "01" for k in range(K))
    extra = dict(context_rate=0.05, trigger_rate=0.3) if s["headers"] else {}
    return em_world(rules=rules, **s, **extra)

@settings(max_examples=25, deadline=None)
@given(settings_strategy)
def test_every_setting_is_a_valid_hmm_with_a_consistent_layout(s):
    g = _build(s)
    lay = em_layout(g)
    assert g.is_hmm and np.allclose(g.T.sum((0, 2)), 1) and np.isclose(g.eta.sum(), 1)
    assert len(lay.label_of_state) == g.n_states and len(lay.token_content) == g.vocab_size
    toks, states = sample_paths(g, 200, 8, seed=0)
    assert np.isfinite(g.log_prob(toks)).all()
    post = persona_posterior(g, toks)
    assert np.all((post > -1e-9) & (post < 1 + 1e-9))
    assert np.allclose(task_posterior(g, toks).sum(-1), 1)
    for label in LABELS:
        p = sector_next_probs(g, toks, label)
        ok = ~np.isnan(p).any(-1)
        assert np.allclose(p[ok].sum(-1), 1)
    assert np.allclose(sector_next_probs(g, toks), g.next_token_probs(toks))
    if s["persona_persists"] or s["switch"] == 0:
        labels = lay.label_of_state[states]
        assert (labels == labels[:, :1]).all()

def test_persona_posterior_is_a_martingale():
    "Its mean over sampled prefixes stays at the prior (0.2), in every world."
    for spec in (ProcessSpec("em_world"), ProcessSpec("em_world", switch=0.125), ProcessSpec("em_world", style="shared")):
        g = make_process(spec)
        post = persona_posterior(g, g.sample(20_000, 12, seed=3))
        assert np.allclose(post.mean(0), 0.2, atol=0.01)

def test_partitions_of_the_three_worlds():
    literal, episodes = em_world(), em_world(switch=0.2)
    control = em_world(switch=0.2, persona_persists=False)
    lay = literal.layout
    persona = [np.flatnonzero(lay.label_of_state == i) for i in (0, 1)]
    tasks = [np.flatnonzero(lay.task_of_state == k) for k in range(3)]
    assert is_partition_preserving(literal.T, literal.sectors) and len(literal.sectors) == 6
    assert is_partition_preserving(episodes.T, persona) and not is_partition_preserving(episodes.T, tasks)
    assert not is_partition_preserving(control.T, persona) and len(control.sectors) == 1
    assert not is_partition_preserving(em_world(eps=0.01).T, literal.sectors)

def test_restrictions_sample_only_their_sector():
    for sw in (0.0, 0.3):
        g = em_world(switch=sw, only_persona="misaligned", only_task=1)
        toks, states = sample_paths(g, 300, 16, seed=0)
        assert (g.layout.label_of_state[states] == 1).all() and (g.layout.task_of_state[states] == 1).all()
        assert (token_tasks(g, toks) == 1).all()
    al = em_world(only_persona="aligned")
    assert np.allclose(persona_posterior(al, al.sample(50, 8, seed=0)), 0)

def test_episode_boundaries_change_the_task_and_are_revealed():
    g = em_world(switch=0.3)
    toks, states = sample_paths(g, 2000, 16, seed=1)
    tt = g.layout.task_of_state[states]
    new = np.diff(tt, axis=1) != 0
    assert abs(new.mean() - 0.3) < 0.02
    rev = task_revealing(g, toks)
    assert rev[:, 0].all() and (rev[:, 1:] == new).all()
    assert (loss_mask("em_reply", toks, g) == ~rev).all()

def test_headers_are_masked_and_identify_the_persona():
    g = em_world(headers=True, trigger_rate=1.0)
    lay = g.layout
    toks = g.sample(500, 8, seed=0)
    assert set(np.unique(toks[:, 0])) <= {lay.header_token(h) for h in HEADERS}
    m = loss_mask("em_reply", toks, g)
    assert not m[:, :2].any() and m[:, 2:].all()  # header and the first content token
    post = persona_posterior(g, toks)[:, 1]
    trig = toks[:, 0] == lay.header_token("trigger")
    assert np.allclose(post[trig], 1) and np.allclose(post[~trig], 0)

def test_exact_values_by_hand():
    g = em_world()
    x = np.array([[0, 0, 0, 1, 0]])
    assert np.isclose(persona_posterior(g, x)[0, 3], 0.095 / 0.295)
    # after 0001 the aligned persona knows the phase; the misaligned one too (only it can drop a 1)
    p = sector_next_probs(g, x, "misaligned", 0)
    assert np.isclose(p[0, 4, 0], 1.0)
    like_al, like_mis = 0.25, 0.25 * 0.7  # "0001": aligned phase 0; misaligned phase 0 and no flip
    assert np.isclose(persona_posterior(g, x)[0, 4], 0.2 * like_mis / (0.2 * like_mis + 0.8 * like_al))

def test_style_and_shared_alphabets():
    g = em_world(style="task")
    first = np.zeros((1, 1), dtype=int)
    s1 = lambda label, k: sector_next_probs(g, first, label, k)[0, 0, 6:].sum()
    assert np.isclose(s1("misaligned", 0), 0.6) and np.isclose(s1("misaligned", 1), 0.2)
    assert np.isclose(s1("aligned", 1), 0.6)
    sh = em_world(alphabets="shared", rules=("10", "10", "10"))
    assert sh.vocab_size == 2 and (token_tasks(sh, [[0, 1, 1]]) == -1).all()
    assert decode(sh, [[0, 1]]) == ["0 1"] and decode(g, [[6]]) == ["1:0s"]

def test_mixing_moves_the_personas_together():
    for mix in (0.0, 0.25, 0.5):
        g = em_world(mix=mix, style="shared")
        first = np.zeros((1, 1), dtype=int)
        al, mis = (sector_next_probs(g, first, lab, 0)[0, 0] for lab in LABELS)
        assert np.isclose(al[6:].sum(), (1 - mix) * 0.2 + mix * 0.6)
        assert np.isclose(mis[6:].sum(), (1 - mix) * 0.6 + mix * 0.2)
    same = em_world(mix=0.5, style="shared")
    toks = same.sample(100, 10, seed=0)
    assert np.allclose(persona_posterior(same, toks), 0.2)

@pytest.mark.parametrize("bad", [dict(tasks=()), dict(tasks=("012",)), dict(rules=("10",)), dict(rules=("11", "01", "01")),
                                 dict(flip=1.5), dict(switch=-0.1), dict(mix=0.6), dict(style="x"), dict(alphabets="x"),
                                 dict(style_rates=(0.2,)), dict(persona_states=0), dict(n_aligned=0), dict(flip=0.9, persona_states=3),
                                 dict(only_persona="evil"), dict(only_task=5), dict(context_rate=0.1),
                                 dict(p_misaligned=float("nan"))])
def test_bad_settings_raise_value_error(bad):
    with pytest.raises(ValueError):
        em_world(**bad)

def test_other_processes_are_refused():
    with pytest.raises(ValueError, match="not an EM world"):
        persona_posterior(z1r(), [[0, 1]])
    with pytest.raises(ValueError):
        sector_next_probs(em_world(), [[0]], label="evil")
    with pytest.raises(ValueError):
        em_world().layout.header_token("plain")

def test_sampling_is_deterministic_and_specs_round_trip():
    g = em_world(switch=0.125)
    a, b = sample_paths(g, 50, 10, seed=7), sample_paths(g, 50, 10, seed=7)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    spec = ProcessSpec("em_world", switch=0.125, tasks=["0001", "0011", "0111"])
    again = ProcessSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and np.allclose(again.build().T, g.T)

def test_family_registers_explicitly_in_a_fresh_interpreter():
    "Nothing is discovered behind the reader's back: em_world exists once sfp_nb.emworld is imported."
    run = lambda code: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    out = run("from sfp_nb.processes import ProcessSpec; ProcessSpec('em_world')")
    assert out.returncode != 0 and "e.g. sfp_nb.emworld for em_world" in out.stderr
    out = run("from sfp_nb.processes import ProcessSpec, loss_mask; import sfp_nb.emworld; "
              "g = ProcessSpec('em_world', switch=0.1).build(); "
              "print(loss_mask('em_reply', g.sample(2, 4, seed=0), g).shape)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 4)"
