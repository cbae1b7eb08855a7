"""Wall seconds per pre-trained EM-world model that passes the persona gate, trained as ensembles on 2 cores.

Run from the repository root: `.venv/bin/python benchmarks/bench_em.py` (writes `results/bench_em.json`, or
`results/smoke/` at `SFP_BUDGET=smoke`). The world is the EM chapters' shared world (`EMConfig().world`), the model
the book's (2 layers, d_model 64). Steps:
1. pilot: each candidate pre-training schedule (steps, batch, learning rate, and two model shapes: 3 layers, or
   d_model 128) trained on the pilot seed (a loky sweep, 2 workers of one thread)
   and read by the persona gate (`sfp_nb.studies.em_controls.persona_gate`: loss gap, in-context carry-over as a
   fraction of the exact Bayes carry-over, persona probe R^2); the schedule chosen is the one with the fewest
   training FLOPs that passes every threshold on the pilot seed (or, if none does, the one nearest to it);
2. fresh seeds: the chosen schedule on `n_fresh` seeds the pilot never saw, trained as ensembles by a sweep whose
   `prepare` hands them to the 2 workers (`sfp_nb.ensemble.training_jobs`); its wall time, then the gate of every
   seed and the gate averaged over the seeds (`gate_verdict`, the gate's definition);
   `seconds_per_gated_model` is that wall time over the number of seeds that pass the gate one by one;
3. the floor: the chosen schedule's training FLOPs at this machine's float32 GEMM rate on 2 threads.
The machine may be shared: the load average is recorded.
"""
from __future__ import annotations
import dataclasses, os, platform, sys, tempfile, time
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from sfp_nb.core import by_budget, save_results
from sfp_nb.ensemble import training_jobs
from sfp_nb.experiments import experiment, sweep
from sfp_nb.processes import make_process
from sfp_nb.studies.em import EMConfig, pretrain_config
from sfp_nb.studies.em_controls import GATE, gate_verdict, persona_gate
from sfp_nb.training import RunOptions, TrainConfig, load_model, train_or_load
from bench_training import gemm_flops, train_flops_per_token

QUIET = RunOptions(progress=False, threads=1)
SCHEDULES = {  # name -> changes to the EM chapters' pre-training config (the last two change the model's shape)
    "600 steps, batch 128, lr 1e-2 (the EM chapters')": dict(steps=600, batch_size=128, lr=1e-2, warmup_steps=30),
    "1500 steps, batch 128, lr 1e-2": dict(steps=1500, batch_size=128, lr=1e-2, warmup_steps=50),
    "3000 steps, batch 128, lr 1e-2": dict(steps=3000, batch_size=128, lr=1e-2, warmup_steps=50),
    "1500 steps, batch 256, lr 3e-3": dict(steps=1500, batch_size=256, lr=3e-3, warmup_steps=100),
    "2000 steps, batch 256, lr 1e-2": dict(steps=2000, batch_size=256, lr=1e-2, warmup_steps=100),
    "3000 steps, batch 256, lr 3e-3": dict(steps=3000, batch_size=256, lr=3e-3, warmup_steps=100),
    "1500 steps, batch 128, lr 1e-2, 3 layers": dict(steps=1500, batch_size=128, lr=1e-2, warmup_steps=50,
                                                     n_layers=3),
    "1500 steps, batch 128, lr 3e-3, d_model 128": dict(steps=1500, batch_size=128, lr=3e-3, warmup_steps=50,
                                                        d_model=128, d_mlp=512),
}
SMOKE = {"100 steps, batch 64": dict(steps=100, batch_size=64, lr=1e-2, warmup_steps=10),
         "150 steps, batch 64": dict(steps=150, batch_size=64, lr=1e-2, warmup_steps=10)}


def em_of(cfg: TrainConfig) -> EMConfig:
    "The EMConfig whose world and seed `cfg` pre-trains (the gate reads its held-out sets)."
    return EMConfig(world=cfg.process, seed=cfg.seed)


@experiment("bench_em_gate", version=1)
def gated(cfg: TrainConfig) -> dict:
    "Train (or load) one pre-training and read its persona gate."
    model, rep = train_or_load(cfg, QUIET)
    return {**persona_gate(model, em_of(cfg), n=by_budget(256, 1024)), "train_seconds": rep["train_seconds"],
            "ensemble_size": rep["ensemble_size"]}


@experiment("bench_em_train", version=1, prepare=lambda cfgs, n_jobs: training_jobs(cfgs, n_jobs, run=QUIET))
def trained(cfg: TrainConfig) -> dict:
    "One pre-training, trained beforehand in an ensemble by the sweep's `prepare`."
    rep = train_or_load(cfg, QUIET)[1]
    return {"gap": rep["gap"], "train_seconds": rep["train_seconds"], "ensemble_size": rep["ensemble_size"]}


def shortfall(g: dict) -> float:
    "How far one model is from the gate (0 when it passes): the largest relative miss of a threshold."
    return max(0.0, g["gap"] / GATE["gap"] - 1, 1 - g["carry_fraction"] / GATE["carry_fraction"],
               1 - g["probe_r2"] / GATE["probe_r2"])


def flops(cfg: TrainConfig) -> float:
    return train_flops_per_token(cfg, make_process(cfg.process).vocab_size + 1)["train"] \
        * cfg.steps * cfg.batch_size * cfg.seq_len


def main():
    os.environ["SFP_ARTIFACTS"] = tempfile.mkdtemp(prefix="bench_em_")  # every model really trains
    base = pretrain_config(EMConfig())
    plan = by_budget(SMOKE, SCHEDULES)
    pilot_seed, fresh = 0, by_budget([1, 2], [1, 2, 3, 4])
    cfgs = {name: dataclasses.replace(base, **ch, seed=pilot_seed) for name, ch in plan.items()}
    t = sweep(gated, list(cfgs.values()), n_jobs=2, show=False)
    rows = []
    for (name, cfg), (_, r) in zip(cfgs.items(), t.iterrows()):
        g = {k: float(r[k]) for k in ("gap", "carry", "carry_bayes", "carry_fraction", "probe_r2")}
        passes = gate_verdict([g])["gated"]
        rows.append({"schedule": name, **plan[name], **g, "passes": passes, "shortfall": shortfall(g),
                     "train_flop": flops(cfg), "train_seconds_one_thread": float(r["train_seconds"])})
        print(f"{name:50s} gap {g['gap']:.4f}  carry {g['carry_fraction']:.2f} of Bayes  probe R^2 {g['probe_r2']:.2f}"
              f"  {r['train_seconds']:5.0f} s  {'passes' if passes else 'fails'}", flush=True)
    ok = [r for r in rows if r["passes"]]
    chosen = min(ok, key=lambda r: r["train_flop"]) if ok else min(rows, key=lambda r: r["shortfall"])
    print(f"chosen: {chosen['schedule']} ({'the cheapest that passes' if ok else 'none passes: the nearest'})")

    seeds = [dataclasses.replace(base, **plan[chosen["schedule"]], seed=s) for s in fresh]
    t0 = time.perf_counter()
    tt = sweep(trained, seeds, n_jobs=2, show=False)
    wall = time.perf_counter() - t0
    per_seed = sweep(gated, seeds, n_jobs=2, show=False)
    gates = [{k: float(r[k]) for k in ("gap", "carry", "carry_bayes", "carry_fraction", "probe_r2")}
             for _, r in per_seed.iterrows()]
    verdict = gate_verdict(gates)
    n_pass = sum(map(passes, gates))
    torch.set_num_threads(2)
    gemm = gemm_flops()
    out = {"seconds_per_gated_model": wall / n_pass if n_pass else None,
           "seconds_per_model": wall / len(seeds), "wall_seconds": wall, "n_models": len(seeds),
           "n_passing_alone": n_pass, "ensemble_size": int(tt.ensemble_size.max()), "workers": 2,
           "gate": verdict, "gate_per_seed": gates, "gate_thresholds": GATE, "fresh_seeds": fresh,
           "pilot_seed": pilot_seed, "schedule": chosen["schedule"], "schedule_changes": plan[chosen["schedule"]],
           "schedules": rows, "world": dataclasses.asdict(base)["process"],
           "floor_seconds_per_model": flops(seeds[0]) / gemm, "gemm_flop_per_s": gemm, "gemm_threads": 2,
           "aim_seconds_per_gated_model": 10,
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                       "load_average_1min": os.getloadavg()[0]}}
    print(f"{len(seeds)} fresh seeds in {wall:.0f} s ({wall / len(seeds):.0f} s a model, ensembles of "
          f"{out['ensemble_size']} on 2 workers); {n_pass} pass the gate alone; averaged: gap {verdict['gap']:.4f}, "
          f"carry {verdict['carry_fraction']:.2f}, R^2 {verdict['probe_r2']:.2f} -> "
          f"{'gated' if verdict['gated'] else 'not gated'}; floor {out['floor_seconds_per_model']:.0f} s a model")
    print(f"wrote {save_results('bench_em', out)}")


if __name__ == "__main__":
    main()
