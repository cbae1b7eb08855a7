"""Why a model trains slower in a Dask worker than in a loky worker: the same training, timed in each kind of process.

Run from the repository root: `.venv/bin/python benchmarks/bench_workers.py` (writes `results/bench_workers.json`,
or `results/smoke/` at `SFP_BUDGET=smoke`). One model of the sweep benchmark's schedule (the book's Z1R x Z1R model,
150 steps, batch 128) is trained on one thread, from scratch in a fresh artifact folder, in:
- `main`: this process;
- `loky`: a loky worker (joblib), as `sweep(backend="loky")` runs it;
- `dask`: a worker of a `LocalCluster` with Dask's default settings, as `sweep(backend="dask")` runs it;
- `dask, no malloc trim`: the same, with Dask's `MALLOC_TRIM_THRESHOLD_=65536` (which its nanny sets in every worker's
  environment by default, `distributed.nanny.pre-spawn-environ` -- and, as a side effect, in the environment of the
  process that starts the cluster, so this cluster is started first) left out;
- `dask, no profiler`: Dask's defaults but its statistical profiler (`distributed.worker.profile.enabled`, which
  samples the running task's Python stack every 10 ms) off;
- `dask, neither`: both changes, as `sfp_nb.experiments.sweep` starts its local clusters;
- `main, malloc trim`: this process's code in a fresh subprocess with `MALLOC_TRIM_THRESHOLD_=65536` set, the one
  variable changed.
The kinds are interleaved over several rounds and each reports its best and median time, so a burst of other load on
a shared machine does not decide the comparison.
"""
from __future__ import annotations
import dataclasses, json, logging, os, platform, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from sfp_nb.core import by_budget, save_results
from sfp_nb.training import RunOptions, TrainConfig, train

CFG = TrainConfig(process="z1r_x_z1r", steps=150, warmup_steps=20)


def train_seconds(steps: int) -> float:
    "Train the benchmark model (fresh, one thread) in a scratch folder: its training seconds."
    with tempfile.TemporaryDirectory() as tmp:
        cfg = dataclasses.replace(CFG, steps=steps)
        return train(cfg, RunOptions(threads=1, progress=False, checkpoint_every=10**9), folder=tmp)[1]["seconds"]


def in_subprocess(steps: int, env: dict) -> float:
    code = f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); " \
           f"from bench_workers import train_seconds; print(train_seconds({steps}))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    import dask
    from dask.distributed import Client, LocalCluster
    from joblib import Parallel, delayed
    steps, rounds = by_budget(30, 150), by_budget(2, 5)
    environ = dask.config.get("distributed.nanny.pre-spawn-environ")
    no_trim = {k: v for k, v in environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    kinds = {"dask, neither": (no_trim, False), "dask, no malloc trim": (no_trim, True),
             "dask, no profiler": (environ, False), "dask": (environ, True)}  # in this order: see above
    times = {k: [] for k in ("main", "main, malloc trim", "loky", *kinds)}
    clusters = {}
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    for name, (env, profile) in kinds.items():
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env,
                              "distributed.worker.profile.enabled": profile}):
            cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.ERROR)
        clusters[name] = (cluster, Client(cluster))
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # what the clusters' nannies left here
    with Parallel(n_jobs=1, backend="loky") as loky:
        for _ in range(rounds):
            times["main"].append(train_seconds(steps))
            times["main, malloc trim"].append(in_subprocess(steps, {"MALLOC_TRIM_THRESHOLD_": "65536"}))
            times["loky"].append(loky([delayed(train_seconds)(steps)])[0])
            for name, (_, client) in clusters.items():
                times[name].append(client.submit(train_seconds, steps, pure=False).result())
    worker_env = {name: list(client.run(lambda: {"MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                                                 "profile": dask.config.get("distributed.worker.profile.enabled")}
                                        ).values())[0] for name, (_, client) in clusters.items()}
    for cluster, client in clusters.values(): client.close(); cluster.close()
    rows = {k: {"best_seconds": min(v), "median_seconds": statistics.median(v), "seconds": v} for k, v in times.items()}
    for k, r in rows.items():
        r["median_vs_main"] = r["median_seconds"] / rows["main"]["median_seconds"]
        print(f"{k:22s} best {r['best_seconds']:6.2f} s  median {r['median_seconds']:6.2f} s  "
              f"{r['median_vs_main']:.2f}x main", flush=True)
    path = save_results("bench_workers", {
        "steps": steps, "rounds": rounds, "config": dataclasses.asdict(CFG), "kinds": rows,
        "dask_pre_spawn_environ": environ, "worker_environment": worker_env,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "load_average_1min": os.getloadavg()[0]}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
