"Cached experiments and sweeps: records by config hash, resuming a killed sweep, Dask equals loky, clear errors."
import dataclasses, json, os, subprocess, sys, textwrap, time
import pytest
from sfp_nb.experiments import experiment, load_record, record_path, run_experiment, sweep

EXP = textwrap.dedent('''
    import dataclasses, os, time
    from sfp_nb.experiments import experiment

    @dataclasses.dataclass(frozen=True)
    class Slow:
        x: int = 0

    @experiment("slow_square")
    def slow_square(cfg: Slow) -> dict:
        with open(os.environ["CALL_LOG"], "a") as f: f.write(f"{cfg.x}\\n")
        if "PID_LOG" in os.environ:
            with open(os.environ["PID_LOG"], "a") as f: f.write(f"{os.getpid()}\\n")
        time.sleep(float(os.environ.get("SLEEP", "0")))
        return {"y": cfg.x ** 2, "nested": {"half": cfg.x / 2}, "curve": [1, 2, 3, 4, 5, 6, 7, 8, 9]}
''')


@pytest.fixture
def slow(tmp_path, monkeypatch):
    (tmp_path / "slowexp.py").write_text(EXP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("CALL_LOG", str(tmp_path / "calls.log"))
    # loky reuses its workers across sweeps: ones started by an earlier test (another file's)
    # lack this sys.path and cannot import slowexp
    from joblib.externals.loky import get_reusable_executor
    get_reusable_executor().shutdown(wait=True)
    import importlib, slowexp
    return importlib.reload(slowexp)


def calls(tmp_path):
    p = tmp_path / "calls.log"
    return [int(x) for x in p.read_text().split()] if p.exists() else []


def test_records_are_cached_by_config_and_checked(slow, tmp_path):
    assert run_experiment(slow.slow_square, slow.Slow(3)) == {"y": 9, "nested": {"half": 1.5}, "curve": list(range(1, 10))}
    run_experiment(slow.slow_square, slow.Slow(3))
    assert calls(tmp_path) == [3]
    path = record_path(slow.slow_square, slow.Slow(3))
    rec = json.loads(path.read_text()); rec["config"]["x"] = 4; path.write_text(json.dumps(rec))
    assert load_record(slow.slow_square, slow.Slow(3)) is None   # never served
    with pytest.warns(UserWarning, match="another config"):       # moved aside, recomputed
        assert run_experiment(slow.slow_square, slow.Slow(3))["y"] == 9
    assert calls(tmp_path) == [3, 3] and path.with_name(path.name + ".invalid-1").exists()
    assert run_experiment(slow.slow_square, slow.Slow(3), recompute=True)["y"] == 9


def test_sweep_table_flattens_numbers_and_keeps_lists_in_records(slow):
    t = sweep(slow.slow_square, [slow.Slow(x) for x in range(3)], backend="serial", show=False)
    assert t.y.tolist() == [0, 1, 4] and t["nested.half"].tolist() == [0, 0.5, 1.0] and "curve" not in t
    assert load_record(slow.slow_square, slow.Slow(2))["result"]["curve"][-1] == 9


def test_killed_sweep_resumes_without_recomputing(slow, tmp_path):
    script = ("import sys; sys.path.insert(0, %r); import slowexp; from sfp_nb.experiments import sweep; "
              "sweep(slowexp.slow_square, [slowexp.Slow(x) for x in range(8)], backend='serial', show=False)") % str(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "SLEEP": "0.4"})
    folder = record_path(slow.slow_square, slow.Slow(0)).parent
    deadline = time.time() + 60
    while time.time() < deadline and len(list(folder.glob("*.json"))) < 3: time.sleep(0.05)
    proc.kill(); proc.wait()
    stored = {x for x in range(8) if load_record(slow.slow_square, slow.Slow(x)) is not None}
    assert 3 <= len(stored) < 8, stored
    before = len(calls(tmp_path))
    t = sweep(slow.slow_square, [slow.Slow(x) for x in range(8)], backend="serial", show=False)
    assert t.y.tolist() == [x * x for x in range(8)]
    assert sorted(calls(tmp_path)[before:]) == sorted(set(range(8)) - stored)  # only the missing configs ran


def test_dask_local_cluster_gives_the_loky_table(slow, tmp_path, monkeypatch):
    cfgs = [slow.Slow(x) for x in range(4)]
    loky = sweep(slow.slow_square, cfgs, backend="loky", n_jobs=2, show=False).drop(columns=["seconds"])
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path / "fresh"))
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    before = dict(os.environ)
    dask = sweep(slow.slow_square, cfgs, backend="dask", n_jobs=2, show=False).drop(columns=["seconds"])
    assert dask.equals(loky)
    assert dict(os.environ) == before  # Dask's nanny leaves nothing in the sweep's environment


def test_a_local_dask_worker_runs_without_dasks_malloc_trim(tmp_path, monkeypatch):
    "MALLOC_TRIM_THRESHOLD_=65536 makes training up to 2x slower (benchmarks/bench_workers.py): the sweep's cluster drops it."
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path))
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    t = sweep(worker_environment, [Probe()], backend="dask", n_jobs=1, show=False)
    assert t["trim"].tolist() == ["unset"]


@dataclasses.dataclass(frozen=True)
class Probe:
    i: int = 0


@experiment("worker_environment", version=1)
def worker_environment(cfg: Probe) -> dict:
    return {"trim": os.environ.get("MALLOC_TRIM_THRESHOLD_", "unset")}


def test_bad_input(slow):
    with pytest.raises(ValueError, match="backend"): sweep(slow.slow_square, [slow.Slow(9)], backend="ray", show=False)
    with pytest.raises(ValueError, match="same config twice"): sweep(slow.slow_square, [slow.Slow(1)] * 2, show=False)
    with pytest.raises(ValueError, match="not an experiment"): run_experiment(lambda c: {}, slow.Slow(1))
    with pytest.raises(TypeError, match="dataclass"): run_experiment(slow.slow_square, {"x": 1})


def test_a_record_of_another_dependency_version_is_moved_aside_and_recomputed(slow, tmp_path):
    from sfp_nb.experiments import register_dependency, _DEPENDS
    register_dependency("test_dep_lib", 1)
    try:
        run_experiment(slow.slow_square, slow.Slow(4))
        path = record_path(slow.slow_square, slow.Slow(4))
        assert json.loads(path.read_text())["depends"]["test_dep_lib"] == 1
        register_dependency("test_dep_lib", 2)   # the library's code changed
        assert load_record(slow.slow_square, slow.Slow(4)) is None   # never served
        with pytest.warns(UserWarning, match=f"{path}: it was computed with test_dep_lib version 1, "
                                             "the current one is 2; moved aside to .*invalid-1"):
            assert run_experiment(slow.slow_square, slow.Slow(4))["y"] == 16
        assert calls(tmp_path) == [4, 4] and load_record(slow.slow_square, slow.Slow(4))["depends"]["test_dep_lib"] == 2
    finally: _DEPENDS.pop("test_dep_lib", None)


def test_a_record_of_another_training_schema_or_of_older_code_is_recomputed(slow, tmp_path):
    from sfp_nb import training
    run_experiment(slow.slow_square, slow.Slow(6))
    path = record_path(slow.slow_square, slow.Slow(6))
    rec = json.loads(path.read_text())
    assert rec["depends"]["sfp_nb.training"] == training.SCHEMA
    # a record of the previous training schema; then one written before records held dependencies
    for old, why in (({**rec, "depends": {"sfp_nb.training": training.SCHEMA - 1}},
                      f"sfp_nb.training version {training.SCHEMA - 1}, the current one is {training.SCHEMA}"),
                     ({k: v for k, v in rec.items() if k != "depends"}, "records no dependency versions")):
        path.write_text(json.dumps(old))
        assert load_record(slow.slow_square, slow.Slow(6)) is None
        with pytest.warns(UserWarning, match=why):
            t = sweep(slow.slow_square, [slow.Slow(6)], backend="serial", show=False)
        assert t.y.tolist() == [36]
    assert calls(tmp_path) == [6, 6, 6] and len(list(path.parent.glob(path.name + ".invalid-*"))) == 2
    # a reader that has not imported training imports it to learn its version: the record is served
    script = ("import sys; sys.path.insert(0, %r); import slowexp; from sfp_nb.experiments import load_record, _DEPENDS; "
              "assert 'sfp_nb.training' not in sys.modules; "
              "assert load_record(slowexp.slow_square, slowexp.Slow(6))['result']['y'] == 36; "
              "assert _DEPENDS['sfp_nb.training'] == %d") % (str(tmp_path), training.SCHEMA)
    subprocess.run([sys.executable, "-c", script], check=True)


def _alive(pid: int) -> bool:
    "Whether process `pid` exists and is not a zombie (an orphan's zombie may wait for a reaper)."
    try: import psutil
    except ImportError:
        try: return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError: return False
    try: return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess: return False


def test_killing_a_sweep_ends_its_loky_workers(slow, tmp_path):
    "SIGKILL to the sweep's process only (not its group): its workers exit within seconds, not after their jobs."
    import signal
    pids = tmp_path / "pids.log"
    script = ("import sys; sys.path.insert(0, %r); import slowexp; from sfp_nb.experiments import sweep; "
              "sweep(slowexp.slow_square, [slowexp.Slow(x) for x in range(4)], backend='loky', n_jobs=2, show=False)"
              ) % str(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "SLEEP": "60", "PID_LOG": str(pids)})
    workers = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(workers) < 2:
            time.sleep(0.1)
            workers = [int(p) for p in pids.read_text().split()] if pids.exists() else []
        assert len(workers) == 2, "the workers never started"
        assert all(_alive(p) for p in workers)
        os.kill(proc.pid, signal.SIGKILL); proc.wait()
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(p) for p in workers): time.sleep(0.1)
        assert not any(_alive(p) for p in workers), f"workers {workers} outlived their sweep"
        assert load_record(slow.slow_square, slow.Slow(0)) is None   # killed mid-job: nothing stored
    finally:
        for p in workers:
            try: os.kill(p, signal.SIGKILL)
            except ProcessLookupError: pass
