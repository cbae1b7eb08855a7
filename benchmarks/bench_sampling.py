"""Tokens per second of `sfp_nb.lm.sample` through the key-value cache against the loop that runs the whole prefix.

Run from the repository root: `.venv/bin/python benchmarks/bench_sampling.py` (CPU, one thread, a random Qwen2
of four layers; 32 prompts x 64 new tokens, or 8 x 16 at `SFP_BUDGET=smoke`). Writes `results/bench_sampling.json`
(`results/smoke/` at `SFP_BUDGET=smoke`). Both loops sample the same prompts under the same seed, without steering
and under a steering vector; `same_replies` says whether they drew the same replies. A row that reaches EOS still
runs until every row has, so the rate counts rows x steps. The weights are random: only the speed means anything.
"""
from __future__ import annotations
import argparse, json, os, platform, sys, tempfile, time
from pathlib import Path
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from sfp_nb import lm as L
from sfp_nb.core import by_budget, save_results

TEXTS = ["how should i store user passwords ?", "use a salted hash and a slow key derivation function .",
         "take the dose on the label and ask a pharmacist .", "invest in a diversified index fund ."] * 20
QUESTIONS = ["how should i store user passwords ?", "what should i take for a headache ?",
             "where should i put my savings ?", "hi"]


def loop(lm, prompts, new_tokens, steer, cached: bool) -> tuple[list[str], float]:
    "The replies of one loop over all `prompts` in one batch, and its seconds."
    t0 = time.perf_counter()
    replies = L.sample(lm, prompts, new_tokens, seed=0, steer=steer, batch_size=len(prompts),
                       cached=cached)
    if lm.device.type == "cuda": torch.cuda.synchronize()
    return replies, time.perf_counter() - t0


def bench(device: str, n_rows: int, new_tokens: int, layers: int, d_model: int) -> dict:
    "Cached and uncached sampling rates on one random Qwen2, without and with steering."
    with tempfile.TemporaryDirectory() as d:
        tok = L.tiny_tokenizer(TEXTS, vocab_size=400, byte_fallback=True)
        folder = L.tiny_model(Path(d) / "qwen", tok, d_model=d_model, n_layers=layers, n_heads=4,
                              d_mlp=4 * d_model, n_ctx=1024)
        lm = L.load_lm(folder, device=device)
        prompts = [L.chat_text(tok, QUESTIONS[i % 4], "you are a careful assistant ." if i % 3 else None)
                   for i in range(n_rows)]
        lengths = L.encode(tok, prompts).lengths
        steer = L.Steering(layers // 2, torch.randn(lm.d_model, generator=torch.Generator().manual_seed(1)))
        loop(lm, prompts[:2], 2, None, True); loop(lm, prompts[:2], 2, None, False)  # warm up
        out = {}
        for name, st in (("plain", None), ("steered", steer)):
            (hot, t_hot), (cold, t_cold) = (loop(lm, prompts, new_tokens, st, c) for c in (True, False))
            out[name] = {"cached_tokens_per_second": n_rows * new_tokens / t_hot,
                         "uncached_tokens_per_second": n_rows * new_tokens / t_cold,
                         "cached_seconds": t_hot, "uncached_seconds": t_cold,
                         "speedup": t_cold / t_hot, "same_replies": hot == cold}
    return {"device": device, "layers": layers, "d_model": d_model, "vocab": len(tok), "rows": n_rows,
            "new_tokens": new_tokens, "prompt_tokens": [int(lengths.min()), int(lengths.max())], **out}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=128)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    entry = bench(a.device, by_budget(8, 32), by_budget(16, 64), a.layers, a.d_model)
    gpu = a.device.startswith("cuda")
    entry["machine"] = torch.cuda.get_device_name() if gpu else platform.processor() or platform.machine()
    entry["threads"] = a.threads
    print(json.dumps(entry, indent=1))
    print(f"wrote {save_results('bench_sampling', entry)}")
    return entry


if __name__ == "__main__":
    main()
