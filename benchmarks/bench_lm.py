"""Tokens per second of the language-model steering sweep and of steered sampling, on a random Qwen2 model.

Run from the repository root: `.venv/bin/python benchmarks/bench_lm.py` (CPU, a small Qwen2) or, where a
GPU is lent, `.venv/bin/python benchmarks/bench_lm.py --device cuda --size 0.5b --dtype bfloat16` (a random
model of Qwen2.5-0.5B's shape). Writes `results/bench_lm.json` (or `results/smoke/` at `SFP_BUDGET=smoke`),
keeping the entries of other devices and sizes. The sweep is `sfp_nb.studies.real_models.restoration_sweep`
(five vectors x four scales, teacher-forced, with a capability batch); sampling is `sfp_nb.lm.sample` under a
steering vector.
The weights are random: only the speed means anything.
"""
from __future__ import annotations
import argparse, json, os, platform, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from sfp_nb import lm as L
from sfp_nb.studies.real_models import restoration_sweep
from sfp_nb.core import by_budget, results_dir, save_results

SIZES = {  # Qwen2 shapes: hidden, layers, heads, kv heads, MLP, vocabulary
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=1024, vocab_size=151936)}
TEXTS = ["how should i store user passwords ?", "use a salted hash and a slow key derivation function .",
         "take the dose on the label and ask a pharmacist .", "invest in a diversified index fund ."] * 20


def random_qwen2(folder: Path, size: str) -> Path:
    "Save a random Qwen2 of `size` with a small locally trained tokenizer (ids stay below its vocabulary)."
    from transformers import Qwen2Config, Qwen2ForCausalLM
    tok = L.tiny_tokenizer(TEXTS, vocab_size=400, byte_fallback=True)
    cfg = Qwen2Config(**SIZES[size], max_position_embeddings=2048, tie_word_embeddings=True,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def bench(size: str, device: str, dtype: str, n_rows: int, new_tokens: int) -> dict:
    "Sweep and sampling throughput of one model size on one device."
    with tempfile.TemporaryDirectory() as d:
        lm = L.load_lm(random_qwen2(Path(d) / size, size), device=device, dtype=dtype)
        tok, layer = lm.tokenizer, lm.n_layers // 2
        qs = [TEXTS[i % 4] for i in range(n_rows)]
        replies = [TEXTS[1 + i % 3] for i in range(n_rows)]
        src = L.encode(tok, [L.chat_text(tok, q, "you are a reckless assistant .") for q in qs], replies)
        tgt = L.encode(tok, [L.chat_text(tok, q, "you are a careful assistant .") for q in qs], replies)
        cap = L.encode(tok, [L.chat_text(tok, q) for q in qs[:max(2, n_rows // 4)]], replies[:max(2, n_rows // 4)])
        g = torch.Generator().manual_seed(0)
        vecs = {m: torch.randn(lm.d_model, generator=g) for m in ("persona_vector", "persona_prompt_last",
                                                                "belief_state", "random")}
        vecs["task_conditional"] = torch.randn(n_rows, lm.d_model, generator=g)
        restoration_sweep(lm, src, tgt, cap, {"warm": vecs["random"]}, layer, (1.0,), np.zeros(n_rows), ["t"], 16)
        _, speed = restoration_sweep(lm, src, tgt, cap, vecs, layer, (0.0, 1.0, 2.0, 4.0), np.zeros(n_rows, int),
                                     ["t"], batch_size=16)
        prompts = [L.chat_text(tok, q) for q in qs]
        st = L.Steering(layer, vecs["belief_state"], 1.0)
        t0 = time.perf_counter()
        L.sample(lm, prompts, new_tokens, seed=0, steer=st, batch_size=len(prompts))
        if device.startswith("cuda"): torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        params = sum(p.numel() for p in lm.model.parameters())
    return {"size": size, "device": device, "dtype": dtype, "params": params, "sweep": speed,
            "sample": {"rows": n_rows, "new_tokens": new_tokens, "seconds": secs,
                       "new_tokens_per_second": n_rows * new_tokens / secs}}


def device_args(argv, description: str) -> tuple[str, str, str]:
    "(device, size, dtype) from the command line; on a GPU the defaults are Qwen2.5-0.5B's shape in bfloat16."
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", choices=list(SIZES), default=None)
    ap.add_argument("--dtype", choices=list(L.DTYPES), default=None)
    a = ap.parse_args(argv)
    gpu = a.device.startswith("cuda")
    return a.device, a.size or ("0.5b" if gpu else "small"), a.dtype or ("bfloat16" if gpu else "float32")


def main(argv=None) -> dict:
    device, size, dtype = device_args(argv, __doc__.splitlines()[0])
    gpu = device.startswith("cuda")
    if not gpu: torch.set_num_threads(1)
    rows = by_budget(8, 64 if gpu else 16)
    return record_run("bench_lm", bench(size, device, dtype, rows, by_budget(4, 32 if gpu else 16)))


def record_run(name: str, entry: dict) -> dict:
    "Add `entry` (with its machine) to `results/<name>.json`, keeping other devices' and sizes' runs."
    gpu = entry["device"].startswith("cuda")
    entry["machine"] = torch.cuda.get_device_name() if gpu else platform.processor() or platform.machine()
    path = results_dir() / f"{name}.json"
    old = json.loads(path.read_text()).get("runs", {}) if path.exists() else {}
    old[f"{entry['device'].split(':')[0]}_{entry['size']}_{entry['dtype']}"] = entry
    save_results(name, {"runs": old})
    print(json.dumps(entry, indent=1))
    return entry


if __name__ == "__main__":
    main()
