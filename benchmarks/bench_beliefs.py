"""Sampling + beliefs for 100,000 sequences of length 16 of Z1R x Z1R: batched GHMM methods vs a per-sequence loop.

Writes results/bench_beliefs.json. The loop is timed on a subset and reported per sequence, then scaled
to the full batch (it is linear in the number of sequences).
"""
import json, os, platform, time
from pathlib import Path

import numpy as np

from sfp_nb.processes import factored, z1r

N, L, N_LOOP, REPEATS = 100_000, 16, 5_000, 3


def batched(p, n, seed):
    tokens = p.sample(n, L, seed)
    return tokens, p.beliefs(tokens)


def loop(p, n, seed):
    "The straightforward version: one sequence at a time, one token at a time."
    rng = np.random.default_rng(seed)
    tokens, beliefs = np.empty((n, L), dtype=np.int64), np.empty((n, L, p.n_states))
    for i in range(n):
        b = p.eta
        for t in range(L):
            x = rng.choice(p.vocab_size, p=np.clip(b @ p.emission, 0, None))
            b = b @ p.T[x]
            b = b / b.sum()
            tokens[i, t], beliefs[i, t] = x, b
    return tokens, beliefs


def best_of(f, *args):
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter(); f(*args); times.append(time.perf_counter() - t0)
    return min(times)


def main():
    p = factored(z1r(), z1r())
    t_batch = best_of(batched, p, N, 0)
    t_loop_subset = best_of(loop, p, N_LOOP, 0)
    # the two agree on what they compute: beliefs of the loop's tokens match the batched beliefs
    tok, bel = loop(p, 200, 1)
    assert np.allclose(p.beliefs(tok), bel)
    t_loop = t_loop_subset * N / N_LOOP
    out = {
        "process": p.name, "n_sequences": N, "length": L,
        "batched_seconds": t_batch, "loop_seconds_for_subset": t_loop_subset, "loop_subset_size": N_LOOP,
        "loop_seconds_scaled_to_full_batch": t_loop, "speedup": t_loop / t_batch,
        "goal": {"speedup_at_least": 50, "batched_seconds_below": 2.0},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
    }
    path = Path(__file__).resolve().parent.parent / "results" / "bench_beliefs.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"batched: {t_batch:.2f} s for {N} sequences; loop: {t_loop:.1f} s (scaled from {N_LOOP}); speedup {t_loop / t_batch:.0f}x")


if __name__ == "__main__":
    main()
