"Budget switch, results files and config hashes."
import dataclasses, json

import numpy as np
import pytest

from sfp_nb import core

def test_budget_switch(monkeypatch):
    monkeypatch.delenv("SFP_BUDGET", raising=False)
    assert core.budget() == "smoke" and core.by_budget(1, 2) == 1
    monkeypatch.setenv("SFP_BUDGET", "FULL")
    assert core.budget() == "full" and core.by_budget(1, 2) == 2
    monkeypatch.setenv("SFP_BUDGET", "huge")
    with pytest.raises(ValueError, match="SFP_BUDGET"): core.budget()

def test_results_are_written_per_budget(monkeypatch, tmp_path):
    monkeypatch.setenv("SFP_HOME", str(tmp_path))
    monkeypatch.setenv("SFP_BUDGET", "smoke")
    p = core.save_results("demo", {"x": np.float32(0.5), "v": np.arange(3)})
    assert p == tmp_path / "results" / "smoke" / "demo.json"
    assert json.loads(p.read_text()) == {"budget": "smoke", "seed_offset": 0, "build": None, "x": 0.5, "v": [0, 1, 2]}
    monkeypatch.setenv("SFP_BUDGET", "full")
    assert core.save_results("demo", {}).parent == tmp_path / "results"

def test_records_are_stamped_with_their_build_and_seed_set(monkeypatch, tmp_path):
    "A replication build (another seed offset) writes beside the main results; the stamp of the write wins."
    monkeypatch.setenv("SFP_HOME", str(tmp_path))
    monkeypatch.setenv("SFP_BUDGET", "full")
    monkeypatch.setenv("SFP_SEED_OFFSET", "100")
    monkeypatch.setenv("SFP_BUILD_ID", "B2")
    p = core.save_results("demo", {"build": "B1", "seed_offset": 0, "x": 1})  # e.g. a merged older record
    assert p == tmp_path / "results" / "seeds100" / "demo.json"
    assert json.loads(p.read_text()) == {"budget": "full", "seed_offset": 100, "build": "B2", "x": 1}
    assert core.seeds(3) == [100, 101, 102] and core.load_results("demo")["x"] == 1
    monkeypatch.setenv("SFP_BUDGET", "smoke")
    assert core.results_dir() == tmp_path / "results" / "smoke" / "seeds100" and core.seeds(3) == [100]
    for bad_name in ("../escape", "a.b", "", "em/controls"):
        with pytest.raises(ValueError, match="a results name is letters, digits and '_'"): core.save_results(bad_name, {})
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["demo.json"]  # nothing else written
    for bad in ("-1", "1.5", "ten"):
        monkeypatch.setenv("SFP_SEED_OFFSET", bad)
        with pytest.raises(ValueError, match="SFP_SEED_OFFSET must be a non-negative integer"): core.seeds(3)

@dataclasses.dataclass
class Cfg:
    a: int = 1
    b: tuple = (1, 2)

def test_config_hash_is_stable_and_sensitive():
    assert core.config_hash(Cfg()) == core.config_hash(Cfg()) and len(core.config_hash(Cfg())) == 12
    assert core.config_hash(Cfg(a=2)) != core.config_hash(Cfg())
    with pytest.raises(TypeError, match="dataclass"): core.config_hash({"a": 1})
