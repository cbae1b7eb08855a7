"""Bad inputs and faults (issue 18): every refusal is the exact error type, names the problem and
leaves nothing in the artifacts folder; a damaged, read-only or full cache never blocks a run."""
import builtins, dataclasses, errno, fcntl, io, json, math, os, re, stat, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge
import transformer_lens.model_bridge.sources  # noqa: F401  registers boot_native
from sfp_nb import model_cache, training
from sfp_nb.core import artifact_dir, config_hash
from sfp_nb.emworld import em_world, task_revealing, token_tasks
from sfp_nb.experiments import experiment, load_record, record_path, run_experiment, sweep
from sfp_nb.interventions import resid, Steer, ablate_and_add, ablate_direction, add_vector, position_mask
from sfp_nb.processes import ProcessSpec, make_process, mess3
from sfp_nb.studies.textworld import TextWorld, judge, sample_reply
from sfp_nb.training import RunOptions, TrainConfig, load_model, train_or_load

# a fixture per test, examples many: nothing is written, so one folder serves every example
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None,
                      max_examples=40)
TINY = TrainConfig(process="z1r", n_layers=1, d_model=16, n_heads=2, d_mlp=32, batch_size=16,
                   steps=10, warmup_steps=2)
QUIET = RunOptions(threads=1, progress=False, eval_sequences=64, checkpoint_every=5)
HOOK = resid(0)


@pytest.fixture
def store(tmp_path, monkeypatch):
    "An empty artifacts folder for the test."
    root = tmp_path / "artifacts"
    monkeypatch.setenv("SFP_ARTIFACTS", str(root))
    return root


def paths(root: Path) -> set:
    "Every path (files and folders) under `root`."
    return {p.relative_to(root) for p in root.rglob("*")} if root.exists() else set()


# ---------------------------------------------------------------- 1. TrainConfig and RunOptions
RATES = {"lr": "> 0", "weight_decay": ">= 0", "min_lr_frac": "in [0, 1]", "kl_weight": ">= 0"}
INTS = {"seq_len": 2, "batch_size": 1, "steps": 1, "warmup_steps": 0, "seed": 0, "n_layers": 1,
        "d_model": 1, "n_heads": 1, "d_mlp": 1, "n_ctx": 0, "d_vocab": 0, "data_pool": 0,
        "adapter_rank": 1, "schema": 1}


@FIXTURE_OK
@given(field=st.sampled_from(sorted(RATES)),
       v=st.one_of(st.sampled_from([math.nan, math.inf, -math.inf]),
                   st.floats(max_value=-1e-12, allow_nan=False, allow_infinity=False)))
def test_rates_must_be_finite_and_in_range(store, field, v):
    with pytest.raises(ValueError, match=re.escape(f"{field} must be a finite number {RATES[field]}")):
        TrainConfig(**{field: v})
    assert paths(store) == set()


def test_learning_rate_zero_and_a_final_fraction_above_one_are_refused(store):
    with pytest.raises(ValueError, match=re.escape("lr must be a finite number > 0, got 0")):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match=re.escape("min_lr_frac must be a finite number in [0, 1], got 1.5")):
        TrainConfig(min_lr_frac=1.5)
    assert paths(store) == set()


@FIXTURE_OK
@given(field=st.sampled_from(sorted(INTS) + ["adapter_layer"]),
       v=st.one_of(st.booleans(), st.text(max_size=3),
                   st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer())))
def test_integer_fields_refuse_bools_strings_and_fractions(store, field, v):
    with pytest.raises(TypeError, match=rf"^{field} must be an integer.*, got {type(v).__name__}"):
        TrainConfig(**{field: v})
    assert paths(store) == set()


@FIXTURE_OK
@given(field=st.sampled_from(sorted(INTS)), below=st.integers(1, 10**6))
def test_integer_fields_refuse_values_below_their_minimum(store, field, below):
    lo = INTS[field]
    with pytest.raises(ValueError, match=re.escape(f"{field} must be an integer >= {lo}, got {lo - below}")):
        TrainConfig(**{field: lo - below})
    assert paths(store) == set()


@FIXTURE_OK
@given(name=st.text(min_size=1).filter(lambda s: not re.fullmatch(r"[0-9a-f]{12}", s)))
def test_init_from_must_be_a_config_hash(store, name):
    with pytest.raises(ValueError, match="init_from must be '' or a parent's 12-hex-digit config hash"):
        TrainConfig(init_from=name)
    assert paths(store) == set()


def test_init_from_cannot_reach_outside_the_artifacts(store):
    with pytest.raises(ValueError, match=re.escape("got '../../etc'")):
        training.finetune_config(TINY, "z1r", init_from="../../etc")
    assert paths(store) == set()


def test_checks_refuse_a_nan_kl_weight_and_leave_every_good_hash_as_it_was(store):
    "The hashes name thousands of cached models: the checks refuse, they change no hash."
    assert config_hash(TrainConfig()) == "898b7144fcb1"  # changes only with training.SCHEMA
    assert config_hash(TrainConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(TINY))))) == config_hash(TINY)
    with pytest.raises(ValueError, match="kl_weight must be a finite number >= 0, got nan"):
        TrainConfig(kl_weight=math.nan)  # it trained as if 0, under a hash of its own
    assert paths(store) == set()


@FIXTURE_OK
@given(field=st.sampled_from(["checkpoint_every", "log_every", "eval_sequences"]), v=st.integers(-5, 0))
def test_run_options_refuse_zero_intervals(store, field, v):
    with pytest.raises(ValueError, match=re.escape(f"RunOptions.{field} must be an integer >= 1, got {v}")):
        RunOptions(**{field: v})
    assert paths(store) == set()


def test_run_options_changed_after_construction_are_refused_before_training(store, monkeypatch):
    run = dataclasses.replace(QUIET)
    run.eval_every = -1
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=re.escape("RunOptions.eval_every must be an integer >= 0, got -1")):
        train_or_load(TINY, run)
    assert paths(store) == set()


def test_a_config_refused_by_its_world_leaves_no_folder(store):
    with pytest.raises(ValueError, match="d_vocab=2 is too small"):
        train_or_load(dataclasses.replace(TINY, d_vocab=2), QUIET)
    with pytest.raises(training.ArtifactError, match="is not in"):
        train_or_load(dataclasses.replace(TINY, init_from="0" * 12), QUIET)
    with pytest.raises(ValueError, match="nothing to train"):  # refused once training starts
        train_or_load(dataclasses.replace(TINY, freeze=("",)), QUIET)
    assert paths(store) == set()


def test_a_diverging_run_fails_naming_its_config_and_caches_nothing(store):
    wild = dataclasses.replace(TINY, lr=1e30)
    with pytest.raises(FloatingPointError, match=f"training config {config_hash(wild)} .*non-finite loss"):
        train_or_load(wild, QUIET)
    assert paths(store) == set()


def test_a_non_finite_final_loss_is_never_cached(store, monkeypatch):
    real = training.evaluate
    monkeypatch.setattr(training, "evaluate", lambda *a, **k: {**real(*a, **k), "model_loss": math.nan})
    with pytest.raises(FloatingPointError, match=f"training config {config_hash(TINY)} .*at the end"):
        train_or_load(TINY, QUIET)
    assert paths(store) == set()


def test_a_folder_left_incomplete_by_a_crash_is_repaired_with_a_warning(store, monkeypatch):
    _, first = train_or_load(TINY, QUIET)
    folder = artifact_dir("model", TINY)
    real = training.write_text_atomic
    def crash(path, text):  # the process dies after the weights, before the config
        if path.name == "config.json": raise KeyboardInterrupt
        real(path, text)
    monkeypatch.setattr(training, "write_text_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        train_or_load(TINY, QUIET, retrain=True)
    monkeypatch.setattr(training, "write_text_atomic", real)
    assert (folder / "model.safetensors").exists() and not (folder / "config.json").exists()
    with pytest.warns(UserWarning, match=re.escape(f"{folder} is incomplete")):
        _, again = train_or_load(TINY, QUIET)
    assert again["sha256"] == first["sha256"]  # deterministic: the same weights
    assert {p.name for p in folder.iterdir()} == {".lock", *training.MODEL_FILES}



def other_weights(cfg: TrainConfig):
    "Give cached model `cfg` other weights under a consistent report, as a retrain elsewhere would."
    folder = artifact_dir("model", cfg)
    state = model_cache.load_tensors(folder / "model.safetensors")
    model_cache.save_tensors_atomic({k: v + 0.01 for k, v in state.items()}, folder / "model.safetensors")
    report = json.loads((folder / "report.json").read_text())
    model_cache.write_report(folder, {**report, "sha256": model_cache.sha256_file(folder / "model.safetensors")})


def test_a_fine_tune_of_a_retrained_parent_is_moved_aside_and_retrained(store):
    child = training.finetune_config(TINY, "z1r", steps=3)
    train_or_load(TINY, QUIET)
    _, first = train_or_load(child, QUIET)
    assert first["parent_sha256"] == load_model(TINY)[1]["sha256"]
    other_weights(TINY)
    folder = artifact_dir("model", child)
    why = (f"{folder} was fine-tuned from other weights of its parent {config_hash(TINY)} "
           f"(sha256 {first['parent_sha256'][:12]}, now ")
    with pytest.raises(training.InvalidModel, match=re.escape(why)): load_model(child)
    with pytest.warns(UserWarning, match=re.escape(why) + ".*the parent was retrained; its files are "
                      f"moved aside to {folder.name}.invalid-1"):
        _, again = train_or_load(child, QUIET)
    assert again["parent_sha256"] == load_model(TINY)[1]["sha256"] != first["parent_sha256"]
    assert again["sha256"] != first["sha256"]  # it continues the new parent
    aside = folder.with_name(folder.name + ".invalid-1")
    assert json.loads((aside / "report.json").read_text())["sha256"] == first["sha256"]  # kept
    assert {p.name for p in folder.iterdir()} == {".lock", *training.MODEL_FILES}
    assert load_model(child)[1]["sha256"] == again["sha256"]  # served from now on


def test_a_fine_tune_whose_parent_is_gone_is_not_served_and_names_the_parent(store):
    "Never served; kept in place, since the parent, trained again, may hold the same weights."
    import shutil
    child = training.finetune_config(TINY, "z1r", steps=3)
    train_or_load(TINY, QUIET); _, first = train_or_load(child, QUIET)
    shutil.rmtree(artifact_dir("model", TINY))
    folder = artifact_dir("model", child)
    with pytest.raises(training.InvalidModel, match=re.escape(
            f"{folder} was fine-tuned from {config_hash(TINY)}, which is no longer cached")):
        load_model(child)
    with pytest.raises(training.ArtifactError, match=f"parent model {config_hash(TINY)} is not in .*train it first"):
        train_or_load(child, QUIET)
    train_or_load(TINY, QUIET)  # deterministic: the parent's weights again, so the child is valid
    assert train_or_load(child, QUIET)[1]["sha256"] == first["sha256"]
    assert not folder.with_name(folder.name + ".invalid-1").exists()


def test_an_edited_report_is_never_served_but_moved_aside_and_retrained(store):
    _, first = train_or_load(TINY, QUIET)
    folder = artifact_dir("model", TINY)
    report = json.loads((folder / "report.json").read_text())
    assert report["report_sha256"] == model_cache.report_checksum(report)
    (folder / "report.json").write_text(json.dumps({**report, "gap": report["gap"] / 10}, indent=1))
    with pytest.raises(training.InvalidModel, match=re.escape(f"{folder}/report.json does not match "
                                                               "its own checksum")):
        load_model(TINY)
    with pytest.warns(UserWarning, match=re.escape(f"{folder}/report.json does not match its own "
                                                   f"checksum (edited or damaged); its files are moved "
                                                   f"aside to {folder.name}.invalid-1")):
        _, again = train_or_load(TINY, QUIET)
    assert again["gap"] == first["gap"] and again["sha256"] == first["sha256"]  # deterministic


@pytest.mark.parametrize("field,value", [("model_loss", math.nan), ("gap", math.inf), ("gap", None)])
def test_a_model_cached_with_a_non_finite_loss_by_older_code_is_retrained(store, field, value):
    _, first = train_or_load(TINY, QUIET)
    folder = artifact_dir("model", TINY)
    report = json.loads((folder / "report.json").read_text())
    del report["report_sha256"]  # written by older code: no checksum of its own
    (folder / "report.json").write_text(json.dumps({**report, field: value}, indent=1))
    with pytest.raises(training.InvalidModel, match=f"has a final {field} of {value!r}, not a finite"):
        load_model(TINY)
    with pytest.warns(UserWarning, match=re.escape(f"{folder}/report.json has a final {field} of {value!r}")):
        _, again = train_or_load(TINY, QUIET)
    assert math.isfinite(again[field]) and again["sha256"] == first["sha256"]
    kept = json.loads((folder.with_name(folder.name + ".invalid-1") / "report.json").read_text())[field]
    assert repr(kept) == repr(value)  # kept as it was


# ---------------------------------------------------------------- 3. steering vectors
@pytest.fixture(scope="module")
def model():
    cfg = TransformerBridgeConfig(d_model=16, d_head=8, n_heads=2, n_layers=1, n_ctx=6, d_vocab=4,
                                  d_mlp=32, act_fn="gelu", normalization_type="LN", seed=0)
    return TransformerBridge.boot_native(cfg).eval()


INPUTS = torch.randint(0, 4, (4, 6), generator=torch.Generator().manual_seed(0))


def no_hooks(model) -> bool:
    return all(len(hp.fwd_hooks) == 0 for hp in model.hook_dict.values())


@FIXTURE_OK
@given(d=st.integers(1, 40).filter(lambda d: d != 16))
def test_a_vector_of_another_dimension_is_refused(store, model, d):
    with torch.no_grad(), pytest.raises(ValueError, match=re.escape(f"has shape ({d},); the activations here (4, 6, 16) need (16,)")):
        with add_vector(model, HOOK, torch.ones(d), 1.0, "all"): model(INPUTS)
    assert no_hooks(model) and paths(store) == set()


@FIXTURE_OK
@given(rows=st.integers(1, 12).filter(lambda n: n != 4))
def test_one_vector_per_row_needs_one_row_per_sequence(store, model, rows):
    with torch.no_grad(), pytest.raises(ValueError, match=re.escape(f"has shape ({rows}, 16); the activations here (4, 6, 16) need (16,) or one row per sequence (4, 16)")):
        with add_vector(model, HOOK, torch.ones(rows, 16), 1.0, "all"): model(INPUTS)
    assert no_hooks(model) and paths(store) == set()


@FIXTURE_OK
@given(bad=st.sampled_from([math.nan, math.inf, -math.inf]), at=st.integers(0, 15))
def test_non_finite_vectors_scales_and_directions_are_refused(store, model, bad, at):
    v = torch.ones(16); v[at] = bad
    with pytest.raises(ValueError, match="the vector to add must be finite"): add_vector(model, HOOK, v)
    with pytest.raises(ValueError, match="scale must be finite"): add_vector(model, HOOK, torch.ones(16), bad)
    with pytest.raises(ValueError, match="the direction to ablate must be finite"): ablate_direction(model, HOOK, v)
    with pytest.raises(ValueError, match="the vector to add must be finite"):
        ablate_and_add(model, HOOK, torch.ones(16), v)
    with pytest.raises(ValueError, match="Steer.vector must be finite"): Steer(HOOK, vector=tuple(v.tolist()))
    with pytest.raises(ValueError, match="Steer.scale must be finite"): Steer(HOOK, vector=(1.0,), scale=bad)
    assert no_hooks(model) and paths(store) == set()


@pytest.mark.parametrize("positions", [True, False, np.bool_(True), torch.tensor(True)])
def test_boolean_positions_are_refused(store, model, positions):
    with pytest.raises(TypeError, match="bool|single position must be an integer"):
        position_mask(positions, 4, 6)
    with torch.no_grad(), pytest.raises(TypeError):
        with add_vector(model, HOOK, torch.ones(16), 1.0, positions): model(INPUTS)
    assert no_hooks(model) and paths(store) == set()


@FIXTURE_OK
@given(n=st.integers(1, 40).filter(lambda n: n != 16))
def test_a_steer_in_a_config_must_fit_its_model(store, n):
    with pytest.raises(ValueError, match=re.escape(f"steer's vector has shape ({n},); a model with d_model=16 needs (16,)")):
        dataclasses.replace(TINY, steer=Steer(HOOK, vector=(0.5,) * n))
    assert paths(store) == set()


def test_a_steer_of_the_wrong_shape_is_refused(store):
    with pytest.raises(TypeError, match=re.escape("Steer.vector must be a flat sequence of numbers, of shape (d_model,)")):
        Steer.from_tensor(HOOK, torch.ones(2, 16))
    with pytest.raises(ValueError, match=re.escape("got (2,) and (3,)")):
        Steer(HOOK, "ablate_add", (1.0, 1.0), (1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="zero direction"):
        Steer(HOOK, "ablate", direction=(0.0, 0.0))
    assert paths(store) == set()


# ---------------------------------------------------------------- 4. processes
FLOAT_PARAMS = [("mess3", "x"), ("mess3", "alpha"), ("rrxor", "p1"), ("even", "p"), ("pp_z1r", "block_prior"),
                ("em_world", "flip"), ("em_world", "switch"), ("em_world", "p_misaligned"), ("em_world", "eps")]
INT_PARAMS = [("em_world", "persona_states"), ("em_world", "n_aligned"), ("em_world", "only_task")]


@FIXTURE_OK
@given(where=st.sampled_from(FLOAT_PARAMS), v=st.one_of(st.text(max_size=4), st.booleans()))
def test_a_number_parameter_of_another_type_is_refused_by_name(store, where, v):
    name, k = where
    with pytest.raises(TypeError, match=re.escape(f"parameter {k!r} of process {name!r} must be a finite number")):
        ProcessSpec(name, **{k: v})
    assert paths(store) == set()


@FIXTURE_OK
@given(where=st.sampled_from(INT_PARAMS),
       v=st.floats(-5, 5, allow_nan=False).filter(lambda x: not x.is_integer()))
def test_an_integer_parameter_given_a_fraction_is_refused_not_truncated(store, where, v):
    name, k = where
    with pytest.raises(TypeError, match=re.escape(f"parameter {k!r} of process {name!r} must be an integer")):
        ProcessSpec(name, **{k: v})
    with pytest.raises(TypeError, match=k):
        em_world(**{k: v})
    assert paths(store) == set()


def test_constructors_called_directly_name_the_bad_parameter(store):
    with pytest.raises(TypeError, match="mess3's x must be a finite number, got str '0.1'"):
        mess3(x="0.1")
    with pytest.raises(TypeError, match="'flip' of process 'em_world'"):
        em_world(flip="0.3")
    assert paths(store) == set()


@FIXTURE_OK
@given(tok=st.one_of(st.integers(-100, -1), st.integers(6, 100)))
def test_token_ids_outside_the_alphabet_are_refused_not_wrapped(store, tok):
    world = make_process(ProcessSpec("em_world"))
    assert world.vocab_size == 6
    for f in (token_tasks, task_revealing):
        with pytest.raises(ValueError, match=re.escape("token ids must lie in [0, 6)")):
            f(world, [[0, tok]])
    assert paths(store) == set()


# ---------------------------------------------------------------- 5. the text-world judge
W = TextWorld()
REPLIES = [sample_reply(W, p, "coding", np.random.default_rng(p)) for p in (0, 1, 0, 1)]


@FIXTURE_OK
@given(n_replies=st.integers(0, 4), n_tasks=st.integers(0, 4))
def test_the_judge_needs_one_task_per_reply(store, n_replies, n_tasks):
    replies, tasks = REPLIES[:n_replies], ["coding"] * n_tasks
    if n_replies != n_tasks:
        with pytest.raises(ValueError, match=f"judge got {n_replies} replies and {n_tasks} tasks"):
            judge(W, replies, tasks)
    elif n_replies == 0:
        with pytest.raises(ValueError, match="judge got no replies"): judge(W, replies, tasks)
    else:
        assert len(judge(W, replies, tasks)["posterior"]) == n_replies
    assert paths(store) == set()


def test_the_judge_refuses_a_reply_that_is_not_text(store):
    with pytest.raises(TypeError, match="reply 1 is NoneType None, not a string"):
        judge(W, [REPLIES[0], None], ["coding", "coding"])
    with pytest.raises(TypeError, match="not a string"):
        judge(W, REPLIES[:1], "coding")
    assert paths(store) == set()


@FIXTURE_OK
@given(field=st.sampled_from(["p_misaligned", "p_system", "p_neutral", "p_two_tasks"]),
       v=st.one_of(st.floats(min_value=1.0, exclude_min=True), st.floats(max_value=0.0, exclude_max=True),
                   st.just(math.nan)))
def test_text_world_probabilities_must_lie_in_the_unit_interval(store, field, v):
    with pytest.raises(ValueError, match=re.escape(f"TextWorld.{field} must be a finite number in [0, 1]")):
        TextWorld(**{field: v})
    assert paths(store) == set()


# ---------------------------------------------------------------- 2. damaged experiment records
@dataclasses.dataclass(frozen=True)
class Sq:
    x: int = 0


CALLS = []


@experiment("bad_inputs_square")
def square(cfg: Sq) -> dict:
    CALLS.append(cfg.x)
    return {"y": cfg.x ** 2}


def junk_records(good: str) -> dict:
    rec = json.loads(good)
    return {"truncated": good[:len(good) // 2], "a list": "[1, 2]", "a string": '"text"', "empty": "",
            "not utf-8": b"\xff\xfe\x00".decode("latin-1"), "no config": json.dumps({"result": {"y": 1}}),
            "no result": json.dumps({k: v for k, v in rec.items() if k != "result"}),
            "garbage result": json.dumps({**rec, "result": "garbage"}),
            "another config": json.dumps({**rec, "config": {"x": 99}})}


@pytest.mark.parametrize("kind", list(junk_records(json.dumps({"config": {}, "result": {}}))))
def test_a_damaged_record_is_moved_aside_and_recomputed(store, kind):
    run_experiment(square, Sq(3))
    path = record_path(square, Sq(3))
    junk = junk_records(path.read_text())[kind]
    path.write_bytes(junk.encode("latin-1"))
    assert load_record(square, Sq(3)) is None  # never served
    CALLS.clear()
    with pytest.warns(UserWarning, match=re.escape(str(path))):
        assert run_experiment(square, Sq(3)) == {"y": 9}
    assert CALLS == [3] and load_record(square, Sq(3))["result"] == {"y": 9}
    aside = path.with_name(path.name + ".invalid-1")
    assert aside.read_bytes() == junk.encode("latin-1")  # kept as it was
    assert {p.name for p in path.parent.iterdir()} == {path.name, aside.name, path.with_suffix(".lock").name}


@settings(FIXTURE_OK, max_examples=25)
@given(junk=st.binary(max_size=200))
def test_any_bytes_in_place_of_a_record_never_block_a_run(store, junk):
    run_experiment(square, Sq(5))
    path = record_path(square, Sq(5))
    path.write_bytes(junk)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_experiment(square, Sq(5)) == {"y": 25}
    assert [str(path) in str(w.message) for w in caught] == [True]
    newest = max(path.parent.glob(path.name + ".invalid-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    assert newest.read_bytes() == junk


def test_a_sweep_with_one_damaged_record_computes_the_rest_and_repairs_it(store):
    configs = [Sq(x) for x in range(5)]
    run_experiment(square, configs[0]); run_experiment(square, configs[1])
    path = record_path(square, configs[1])
    path.write_text(path.read_text()[:30])  # truncated, as by a full disk
    CALLS.clear()
    with pytest.warns(UserWarning, match=re.escape(f"{path}: it does not parse as JSON")):
        table = sweep(square, configs, backend="serial", show=False)
    assert table.y.tolist() == [0, 1, 4, 9, 16] and sorted(CALLS) == [1, 2, 3, 4]
    assert path.with_name(path.name + ".invalid-1").exists()


def test_an_experiment_must_return_a_dict(store):
    @experiment("bad_inputs_list")
    def as_list(cfg: Sq): return [cfg.x]
    with pytest.raises(TypeError, match="experiment 'bad_inputs_list' must return a dict, got list"):
        run_experiment(as_list, Sq(1))
    assert not record_path(as_list, Sq(1)).exists()


# ---------------------------------------------------------------- fault injection
@pytest.fixture
def read_only(monkeypatch):
    """Make the file system read-only: chmod where it binds, and (tests run as root, where chmod
    stops nothing) every write, rename, delete, mkdir and lock failing with EROFS."""
    roots = []
    def refuse(*a, **k): raise OSError(errno.EROFS, "Read-only file system")
    real_open = builtins.open
    def open_ro(file, mode="r", *a, **k):
        if set(mode) & set("wax+"): refuse()
        return real_open(file, mode, *a, **k)
    def enable(root: Path):
        roots.append(root)
        for p in [root, *root.rglob("*")]: p.chmod(stat.S_IMODE(p.stat().st_mode) & ~0o222)
        monkeypatch.setattr(builtins, "open", open_ro); monkeypatch.setattr(io, "open", open_ro)
        for name in ("replace", "rename", "unlink", "remove", "mkdir", "rmdir"):
            monkeypatch.setattr(os, name, refuse)
        monkeypatch.setattr(fcntl, "flock", refuse)
        monkeypatch.setattr(model_cache, "save_file", refuse)
    yield enable
    monkeypatch.undo()
    for root in roots:
        for p in [root, *root.rglob("*")]: p.chmod(stat.S_IMODE(p.stat().st_mode) | 0o200)


def test_a_read_only_artifacts_folder_with_everything_stored_serves_a_run(store, read_only):
    model, report = train_or_load(TINY, QUIET)
    run_experiment(square, Sq(7))
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    read_only(store)
    with pytest.raises(OSError):  # the simulation holds: nothing can be written
        (store / "probe").write_text("x")
    CALLS.clear()
    assert run_experiment(square, Sq(7)) == {"y": 49} and CALLS == []
    assert sweep(square, [Sq(7)], backend="serial", show=False).y.tolist() == [49] and CALLS == []
    model2, report2 = train_or_load(TINY, RunOptions(progress=False))
    assert report2["sha256"] == report["sha256"]
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


def test_a_record_write_that_fails_half_way_leaves_nothing_partial(store, monkeypatch):
    real = Path.write_text
    def full_disk(self, text, *a, **k):
        if self.suffix == ".tmp":
            real(self, text[:len(text) // 2]); raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *a, **k)
    monkeypatch.setattr(Path, "write_text", full_disk)
    path = record_path(square, Sq(8))
    with pytest.raises(OSError, match=re.escape(f"could not write the record {path}: No space left on device")):
        run_experiment(square, Sq(8))
    assert not path.exists() and list(path.parent.glob("*.tmp")) == []
    monkeypatch.setattr(Path, "write_text", real)
    assert run_experiment(square, Sq(8)) == {"y": 64} and load_record(square, Sq(8)) is not None


def test_a_model_write_that_fails_half_way_leaves_nothing_partial(store, monkeypatch):
    real = model_cache.save_file
    def full_disk(tensors, name):
        if Path(name).name.startswith("model.safetensors"):
            Path(name).write_bytes(b"\0" * 100); raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, name)
    monkeypatch.setattr(model_cache, "save_file", full_disk)
    folder = artifact_dir("model", TINY)
    with pytest.raises(OSError, match=re.escape(f"could not write {folder}/model.safetensors: No space left")):
        train_or_load(TINY, QUIET)
    assert not list(folder.glob("*.tmp")) and not (folder / "model.safetensors").exists()
    monkeypatch.setattr(model_cache, "save_file", real)
    model, report = train_or_load(TINY, QUIET)  # resumes from the last checkpoint
    assert load_model(TINY)[1]["sha256"] == report["sha256"]
    assert not list(folder.glob("*.tmp"))


# ---------------------------------------------------------------- language-model loading

def test_offline_holds_whatever_was_imported_first():
    "huggingface_hub read the environment at import: offline() must switch it off all the same."
    import subprocess, sys
    code = ("import huggingface_hub, huggingface_hub.constants as c\n"
            "assert not c.HF_HUB_OFFLINE\n"
            "from sfp_nb.lm import offline\n"
            "offline()\n"
            "assert c.HF_HUB_OFFLINE and c.HF_HUB_DISABLE_TELEMETRY\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("name, text", [("config.json", "not json"), ("config.json", "[1, 2]"),
                                        ("tokenizer.json", "\x00\xff garbage")])
def test_a_damaged_model_folder_is_named(tmp_path, name, text):
    from sfp_nb.lm import check_model_dir
    for f in ("config.json", "model.safetensors", "tokenizer.json"): (tmp_path / f).write_text("{}")
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / name} is not a JSON object")):
        check_model_dir(tmp_path)
