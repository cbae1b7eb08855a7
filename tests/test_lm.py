"Language-model library (offline loading, padding, persona vectors, grid centroids, steering, sampling, fine-tuning) and the real-model study's command."
import json
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from sfp_nb import lm as L
from sfp_nb.interventions import add_vector, blocks_of, resid
from sfp_nb.steering import js, tv
from sfp_nb.studies import real_models as RM

TEXTS = ["how do i store passwords ?", "use a salted hash .", "take the label dose .",
         "you are a careful assistant .", "you are a reckless assistant .", "what is two plus two ?"] * 10
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.set_num_threads(1)
    L.offline()
    tok = L.tiny_tokenizer(TEXTS, vocab_size=400, byte_fallback=True)
    return L.tiny_model(tmp_path_factory.mktemp("qwen") / "m", tok, arch="qwen2", d_model=32, d_mlp=64)


@pytest.fixture(scope="module")
def lm(folder): return L.load_lm(folder)


def prompts(lm, system=None):
    return [L.chat_text(lm.tokenizer, q, system) for q in ("how do i store passwords ?", "what is two plus two ?")]


def test_missing_and_incomplete_folders_say_what_to_put_there(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json, the weights"):
        L.load_lm(tmp_path / "absent")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="lacks weights, tokenizer"):
        L.check_model_dir(tmp_path)


def test_bad_arguments(lm):
    with pytest.raises(ValueError, match="dtype"): L.load_lm(lm.path, dtype="int3")
    with pytest.raises(ValueError, match="layer"): lm.hook(5)
    with pytest.raises(ValueError, match="where must be"): L.next_token_probs(lm, L.encode(lm.tokenizer, ["a"]), "last")
    with pytest.raises(ValueError, match="responses"): L.encode(lm.tokenizer, ["a"], ["b", "c"])
    with pytest.raises(ValueError, match="where"): L.layer_acts(lm, L.encode(lm.tokenizer, ["a"]), where="middle")
    with pytest.raises(ValueError, match="temperature"): L.sample(lm, ["a"], temperature=0)
    with pytest.raises(ValueError, match="max_new_tokens"): L.sample(lm, ["a"], 0)
    with pytest.raises(ValueError, match="steer_vector"):
        L.finetune(None, lm.tokenizer, ["a"], ["b"], L.FinetuneConfig(steer_scale=1.0))
    with pytest.raises(ValueError, match="arch"): L.tiny_model("/tmp/x", lm.tokenizer, arch="mamba")


def test_offline_environment(lm):
    import os
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_qwen2_tokenizer_adds_no_bos(lm):
    ids = lm.tokenizer("hi there").input_ids
    assert ids == lm.tokenizer("hi there", add_special_tokens=False).input_ids  # nothing added


def test_bridge_matches_hugging_face(lm):
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(lm.path, local_files_only=True, attn_implementation="eager").eval()
    b = L.encode(lm.tokenizer, prompts(lm))
    with torch.no_grad():
        assert (lm.model(b.ids) - hf(b.ids).logits).abs().max() < 1e-5


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=2, max_size=4))
def test_padding_never_changes_real_positions(lm, lengths):
    words = ["use", "a", "salted", "hash", ".", "take", "the", "label", "dose", ".", "two", "four"]
    texts = [" ".join(words[:n]) for n in lengths]
    b = L.encode(lm.tokenizer, texts)
    with torch.no_grad():
        full = lm.model(b.ids)
        for i in range(len(texts)):
            alone = lm.model(b.ids[i:i + 1, :b.lengths[i]])
            assert torch.allclose(full[i, :b.lengths[i]], alone[0], atol=1e-5)


def test_persona_vectors_are_antisymmetric_differences(lm):
    r = ["use a salted hash .", "four ."]
    pos = L.encode(lm.tokenizer, prompts(lm, "you are a reckless assistant ."), r)
    neg = L.encode(lm.tokenizer, prompts(lm, "you are a careful assistant ."), r)
    a, b = L.persona_vectors(lm, pos, neg), L.persona_vectors(lm, neg, pos)
    assert torch.allclose(a.response_avg, -b.response_avg) and torch.allclose(a.prompt_last, -b.prompt_last)
    assert a.response_avg.shape == (lm.n_layers, lm.d_model)
    assert torch.allclose(L.persona_vectors(lm, pos, pos).response_avg, torch.zeros(lm.n_layers, lm.d_model))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(0, 10_000))
def test_grid_centroids_are_balanced_over_tasks(n0, n1, seed):
    g = torch.Generator().manual_seed(seed)
    cell = torch.randn(2, 2, 3, generator=g)
    acts, persona, task = [], [], []
    for p in range(2):
        for k, n in enumerate((n0, n1)):
            acts += [cell[p, k]] * n; persona += [p] * n; task += [k] * n
    gc = L.grid_centroids(torch.stack(acts), persona, task)
    assert torch.allclose(gc.centroids, cell.mean(1), atol=1e-6)  # counts do not weight the tasks
    assert torch.allclose(gc.task_vectors(0, 1).mean(0), gc.vector(0, 1), atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 8), st.integers(0, 10_000))
def test_js_bits_is_bounded_symmetric_and_below_tv(n, seed):
    g = torch.Generator().manual_seed(seed)
    p, q = (torch.softmax(3 * torch.randn(n, generator=g, dtype=torch.float64), -1) for _ in range(2))
    f = L.js_bits
    assert 0 <= f(p, q) <= 1 + 1e-12 and abs(f(p, q) - f(q, p)) < 1e-12 and f(p, p) < 1e-12
    assert f(p, q) <= tv(p, q) + 1e-12
    assert abs(float(f(p, q)) - js(p, q) / np.log(2)) < 1e-12  # sfp_nb.steering.js is in nats


def test_sampling_is_seeded_and_batch_independent(lm):
    ps = prompts(lm)
    assert L.sample(lm, ps, 6, seed=3) == L.sample(lm, ps, 6, seed=3)
    cold = L.sample(lm, ps, 6, seed=0, temperature=1e-4)
    assert cold == [L.sample(lm, [p], 6, seed=0, temperature=1e-4)[0] for p in ps]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    tok = L.tiny_tokenizer(TEXTS, vocab_size=400, byte_fallback=True)
    return L.load_lm(L.tiny_model(tmp_path_factory.mktemp("llama") / "m", tok, arch="llama", d_model=32,
                                  d_mlp=64, n_layers=3))


def forced_batch(tok, b, toks):
    "`b` with the tokens `toks` (batch, k) after each row's prompt, right-padded."
    k = toks.shape[1]
    ids = torch.full((len(b), int(b.lengths.max()) + k), L.pad_id(tok))
    for i, n in enumerate(b.lengths.tolist()): ids[i, :n + k] = torch.cat([b.ids[i, :n], toks[i]])
    return L.Batch(ids, b.lengths + k, b.lengths)


@settings(max_examples=6, deadline=None)
@given(st.lists(st.integers(1, 10), min_size=1, max_size=4), st.integers(1, 5), st.integers(0, 10_000),
       st.sampled_from(["none", "one", "per_row"]), st.sampled_from(["qwen2", "llama"]))
def test_cached_steps_equal_the_whole_prefix(lm, llama, lengths, k, seed, how, arch):
    m = lm if arch == "qwen2" else llama
    words = ["use", "a", "salted", "hash", ".", "take", "the", "label", "dose", "."]
    b = L.encode(m.tokenizer, [" ".join(words[:n]) for n in lengths])
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(len(m.tokenizer), (len(b), k), generator=g)
    vec = {"none": None, "one": 3 * torch.randn(m.d_model, generator=g),
           "per_row": 3 * torch.randn(len(b), m.d_model, generator=g)}[how]
    steer = None if vec is None else L.Steering(-1, vec, 1.0)
    dec, cached = L._Decoder(m, b, steer, slice(None)), []
    for t in range(k):
        if t: dec.step(toks[:, t - 1])
        cached.append(dec.logits)
    cached = torch.softmax(torch.stack(cached, 1).double(), -1).flatten(0, 1)
    whole = L.next_token_probs(m, forced_batch(m.tokenizer, b, toks), steer=steer)  # no cache
    assert torch.allclose(cached, whole, atol=1e-5)
    assert all(len(h.fwd_hooks) == 0 for h in m.model.hook_dict.values())


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_cached_sampling_draws_the_uncached_replies(lm, llama, arch):
    m = lm if arch == "qwen2" else llama
    ps = prompts(m, "you are a careful assistant .")[:1] + prompts(m) + [L.chat_text(m.tokenizer, "hi")]
    steer = L.Steering(0, torch.randn(len(ps), m.d_model, generator=torch.Generator().manual_seed(0)), 2.0)
    for st_ in (None, steer):
        ref = L.sample(m, ps, 10, seed=5, steer=st_, cached=False)
        assert L.sample(m, ps, 10, seed=5, steer=st_) == ref and any(ref)


def test_steering_zero_scale_is_identity_and_hooks_are_removed(lm):
    b = L.encode(lm.tokenizer, prompts(lm), ["use a salted hash .", "four ."])
    v = torch.randn(lm.d_model)
    base = L.next_token_probs(lm, b)
    assert torch.allclose(L.next_token_probs(lm, b, steer=L.Steering(0, v, 0.0)), base)
    assert L.js_bits(L.next_token_probs(lm, b, steer=L.Steering(0, 10 * v, 1.0)), base).mean() > 1e-4
    assert all(len(h.fwd_hooks) == 0 for h in lm.model.hook_dict.values())


def test_steering_a_plain_model_equals_steering_the_bridge(lm):
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(lm.path, local_files_only=True).eval()
    b = L.encode(lm.tokenizer, prompts(lm))
    v, rows = torch.randn(lm.d_model), torch.randn(len(b), lm.d_model)
    with torch.no_grad():
        for st in (L.Steering(1, v, 1.5), L.Steering(-1, v, 1.5), L.Steering(0, rows, 2.0)):
            with st.apply(hf): a = hf(b.ids).logits
            with L.steered(lm, st): c = lm.model(b.ids)
            assert torch.allclose(a, c, atol=1e-4)
        with add_vector(hf, resid(0, "pre"), v, 1.0, "all"): pre = hf(b.ids).logits
        with add_vector(lm.model, resid(0, "pre"), v, 1.0, "all"): pre_bridge = lm.model(b.ids)
    assert torch.allclose(pre, pre_bridge, atol=1e-4)
    assert all(not l._forward_hooks and not l._forward_pre_hooks for l in blocks_of(hf))


def test_preventative_steering_hooks_the_adapter_model_and_leaves_none(lm):
    from transformers import AutoModelForCausalLM
    base = dict(steps=3, batch_size=2, lr=1e-2, rank=1, seed=1)
    logs = []
    for scale in (0.0, 3.0):
        hf = AutoModelForCausalLM.from_pretrained(lm.path, local_files_only=True)
        cfg = L.FinetuneConfig(**base, steer_layer=-1, steer_scale=scale)
        model, log = L.finetune(hf, lm.tokenizer, prompts(lm) * 2, ["four ."] * 4, cfg, torch.ones(lm.d_model))
        logs.append(log["losses"])
        assert all(not l._forward_hooks for l in blocks_of(model))
    assert logs[0][0] != logs[1][0]


@pytest.mark.parametrize("rank", [0, 1, 4])
def test_finetune_lowers_loss_and_merges(lm, rank):
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(lm.path, local_files_only=True)
    cfg = L.FinetuneConfig(steps=15, batch_size=4, lr=3e-2 if rank else 1e-2, rank=rank)
    model, log = L.finetune(hf, lm.tokenizer, prompts(lm) * 4, ["use a salted hash ."] * 8, cfg)
    assert log["losses"][-1] < log["losses"][0]
    assert type(model).__name__ == "Qwen2ForCausalLM"


def test_finetune_is_deterministic(lm):
    from transformers import AutoModelForCausalLM
    cfg = L.FinetuneConfig(steps=5, batch_size=2, lr=1e-2, rank=1, seed=7)
    runs = [L.finetune(AutoModelForCausalLM.from_pretrained(lm.path, local_files_only=True), lm.tokenizer,
                       prompts(lm) * 2, ["four ."] * 4, cfg)[1]["losses"] for _ in range(2)]
    assert runs[0] == runs[1]


def test_real_model_command_on_a_random_qwen2(lm, tmp_path):
    out = tmp_path / "real.json"
    rec = RM.main(["--model-dir", str(lm.path), "--out", str(out), "--max-new-tokens", "5",
                  "--questions-per-task", "1", "--scales", "0", "2"])
    saved = json.loads(out.read_text())
    assert saved["layer"] == rec["layer"] == 1 and saved["speed"]["tokens_per_second"] > 0
    for r in saved["sweep"]:
        if r["scale"] == 0: assert abs(r["restored_fraction"]) < 1e-9 and r["collateral"] < 1e-12
    assert set(saved["monitoring"]) == {"aligned", "misaligned", "neutral", "none"}
    with pytest.raises(SystemExit): RM.main(["--model-dir", str(lm.path), "--dtype", "int8"])


def test_plain_text_prompts_without_a_chat_template(folder, tmp_path):
    tok = L.tiny_tokenizer(TEXTS, vocab_size=400, chat_template=None, byte_fallback=True)
    m = L.load_lm(L.tiny_model(tmp_path / "llama", tok, arch="llama", d_model=32, d_mlp=64))
    text = L.chat_text(m.tokenizer, "what is two plus two ?", system="be brief .")
    assert text == "be brief .\nwhat is two plus two ?\n"
    assert len(L.sample(m, [text], 4, seed=0)) == 1


@gpu
@needs_cuda
def test_gpu_matches_cpu_and_samples(lm):
    g = L.load_lm(lm.path, device="cuda")
    b = L.encode(lm.tokenizer, prompts(lm))
    with torch.no_grad():
        assert (g.model(b.ids.cuda()).float().cpu() - lm.model(b.ids)).abs().max() < 1e-3
    assert L.sample(g, prompts(lm), 6, seed=1) == L.sample(g, prompts(lm), 6, seed=1)


@gpu
@needs_cuda
def test_gpu_real_model_command(lm, tmp_path):
    rec = RM.main(["--model-dir", str(lm.path), "--out", str(tmp_path / "r.json"), "--device", "cuda",
                  "--dtype", "bfloat16", "--max-new-tokens", "5", "--questions-per-task", "2"])
    assert rec["speed"]["tokens_per_second"] > 0


@gpu
@needs_cuda
def test_gpu_finetune_with_preventative_steering(lm):
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(lm.path, local_files_only=True).cuda()
    cfg = L.FinetuneConfig(steps=5, batch_size=2, lr=1e-2, rank=1, steer_layer=0, steer_scale=2.0)
    model, log = L.finetune(hf, lm.tokenizer, prompts(lm) * 2, ["four ."] * 4, cfg, torch.randn(lm.d_model))
    assert len(log["losses"]) == 5 and next(model.parameters()).is_cuda
