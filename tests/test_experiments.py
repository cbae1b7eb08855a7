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
        time.sleep(float(os.environ.get("SLEEP", "0")))
        return {"y": cfg.x ** 2, "nested": {"half": cfg.x / 2}, "curve": [1, 2, 3, 4, 5, 6, 7, 8, 9]}
''')


@pytest.fixture
def slow(tmp_path, monkeypatch):
    (tmp_path / "slowexp.py").write_text(EXP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SFP_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("CALL_LOG", str(tmp_path / "calls.log"))
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
    dask = sweep(slow.slow_square, cfgs, backend="dask", n_jobs=2, show=False).drop(columns=["seconds"])
    assert dask.equals(loky)


def test_bad_input(slow):
    with pytest.raises(ValueError, match="backend"): sweep(slow.slow_square, [slow.Slow(9)], backend="ray", show=False)
    with pytest.raises(ValueError, match="same config twice"): sweep(slow.slow_square, [slow.Slow(1)] * 2, show=False)
    with pytest.raises(ValueError, match="not an experiment"): run_experiment(lambda c: {}, slow.Slow(1))
    with pytest.raises(TypeError, match="dataclass"): run_experiment(slow.slow_square, {"x": 1})
