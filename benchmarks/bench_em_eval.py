"""Seconds, tokens per second and memory of the offline EM evaluation (`python -m sfp_nb.em_eval`) on random Qwen2 models.

Run from the repository root: `.venv/bin/python benchmarks/bench_em_eval.py` (CPU, a small Qwen2) or, where a
GPU is lent, `.venv/bin/python benchmarks/bench_em_eval.py --device cuda --size 0.5b --dtype bfloat16` (a random
model of Qwen2.5-0.5B's shape as base and as judge, and a random rank-8 LoRA organism). It answers eight
questions (the size of Betley et al.'s first-plot set) with `--samples` replies each per model, and writes
`results/bench_em_eval.json` (or `results/smoke/` at `SFP_BUDGET=smoke`), keeping the entries of other devices
and sizes. The weights are random: only the speed means anything. A random judge puts little probability on
numbers, so the run lowers `min_mass` to score every reply, as a real judge would.
"""
from __future__ import annotations
import os, sys, tempfile
from pathlib import Path
import torch
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench_lm import TEXTS, device_args, random_qwen2, record_run
from sfp_nb import em_eval as E
from sfp_nb import lm as L
from sfp_nb.core import by_budget


def random_organism(base: Path, folder: Path) -> Path:
    "A random rank-8 LoRA adapter on every linear map of `base`'s blocks."
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(1)
    hf = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
    cfg = LoraConfig(r=8, lora_alpha=8, init_lora_weights=False, target_modules=list(L.LORA_TARGETS[:7]))
    get_peft_model(hf, cfg).save_pretrained(folder)
    return folder


def bench(size: str, device: str, dtype: str, samples: int, new_tokens: int) -> dict:
    "One evaluation of base, organism and steered organism; its record's timings."
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        base = random_qwen2(d / "base", size)
        qs = [{"id": f"q{i}", "paraphrases": [TEXTS[i % 4]], "samples_per_paraphrase": samples} for i in range(8)]
        (d / "q.yaml").write_text(yaml.safe_dump(qs))
        if device.startswith("cuda"): torch.cuda.reset_peak_memory_stats()
        rec = E.run_eval(E.EvalConfig(str(base), str(random_organism(base, d / "organism")), str(base),
                                      str(d / "q.yaml"), max_new_tokens=new_tokens, min_mass=1e-6,
                                      device=device, dtype=dtype, batch_size=64))
    n = len(rec["answers"])
    return {"size": size, "device": device, "dtype": dtype, "replies": n, "max_new_tokens": new_tokens,
            "seconds": rec["seconds"], "judge_seconds_per_reply": rec["seconds"]["judge"] / n,
            # a random model rarely draws EOS among 151,936 tokens: every reply runs to max_new_tokens
            "new_tokens_per_s": {m: n // 3 * new_tokens / rec["seconds"][m] for m in rec["models"]},
            "peak_memory_gib": (torch.cuda.max_memory_allocated() / 2**30
                                if device.startswith("cuda") else None)}


def main(argv=None) -> dict:
    device, size, dtype = device_args(argv, __doc__.splitlines()[0])
    gpu = device.startswith("cuda")
    return record_run("bench_em_eval", bench(size, device, dtype, by_budget(2, 50 if gpu else 8),
                                             by_budget(8, 256 if gpu else 64)))


if __name__ == "__main__":
    main()
