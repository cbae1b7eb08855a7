"Properties of the report's statistics: Holm's correction across a family of endpoints, pooled ratios."
import math
import numpy as np
from hypothesis import given, settings, strategies as st
from sfp_nb.report import ci_excludes, holm, mean_ci, pooled_ratio

family = st.dictionaries(st.sampled_from("abcdef"),
                         st.lists(st.floats(-3, 3, allow_nan=False), min_size=3, max_size=12),
                         min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(family, st.sampled_from([0.01, 0.05, 0.1]))
def test_holm_rejects_exactly_where_the_interval_excludes_zero(values, alpha):
    out = holm(values, alpha)
    tested = {k: e for k, e in out.items() if not math.isnan(e["p"])}
    order = sorted(tested, key=lambda k: tested[k]["p"])
    adj = [tested[k]["p_holm"] for k in order]
    assert adj == sorted(adj) and all(tested[k]["p"] <= tested[k]["p_holm"] <= 1 for k in order)
    levels = [tested[k]["level"] for k in order]
    # the levels relax step by step (from 1 - alpha/m towards 1 - alpha), and never after a kept endpoint
    assert levels == sorted(levels, reverse=True) and all(1 - alpha <= v <= 1 - alpha / len(order) for v in levels)
    for k in order:
        e, spread = tested[k], np.std(values[k], ddof=1)
        if spread > 1e-6 * max(1.0, abs(np.mean(values[k]))):  # away from a t statistic of 0/0
            assert ci_excludes(e) == (e["p_holm"] <= alpha), (k, e)
        assert e["mean"] == mean_ci(values[k])["mean"]


def test_holm_with_one_endpoint_is_the_plain_test():
    x = [0.2, 0.5, -0.1, 0.4, 0.3]
    e = holm({"x": x})["x"]
    ci = mean_ci(x)
    assert e["p"] == e["p_holm"] and e["level"] == 0.95
    assert (e["ci_low"], e["ci_high"]) == (ci["ci_low"], ci["ci_high"])

ratios = st.lists(st.tuples(st.floats(-2, 2), st.floats(0.1, 2)), min_size=2, max_size=12)

@settings(max_examples=200, deadline=None)
@given(ratios, st.floats(0.1, 10))
def test_pooled_ratio_is_a_weighted_mean_and_scale_free(pairs, scale):
    num, den = (np.array(x) for x in zip(*pairs))
    r = pooled_ratio(num, den)
    if math.isnan(r["mean"]):  # only where the denominator is not resolved above zero
        assert mean_ci(den)["ci_low"] <= 0
        return
    per_seed = num / den  # the pooled ratio weights each seed's ratio by its denominator
    assert per_seed.min() - 1e-9 <= r["mean"] <= per_seed.max() + 1e-9
    assert r["ci_low"] - 1e-9 <= r["ci_high"]
    assert np.isclose(pooled_ratio(num * scale, den * scale)["mean"], r["mean"])

def test_pooled_ratio_is_deterministic_and_sums_parts():
    num, den = [[0.1, 0.3], [0.2, 0.2], [0.0, 0.4]], [[0.5, 0.5], [0.4, 0.6], [0.5, 0.5]]
    a, b = pooled_ratio(num, den, seed=3), pooled_ratio(num, den, seed=3)
    assert a == b and np.isclose(a["mean"], 1.2 / 3.0)
