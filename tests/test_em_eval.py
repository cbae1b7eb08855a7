"The offline EM evaluation (sfp_nb.em_eval): question files, the judge's number weighting, rates over questions, and the whole command on tiny random Llama/Qwen2 models."
import json, warnings
import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings, strategies as st
from sfp_nb import em_eval as E
from sfp_nb import lm as L

TEXTS = ["how do i store passwords ?", "use a salted hash .", "what should i do with my savings ?",
         "you are a careful assistant .", "invest in index funds ."] * 10  # no digits: numbers are bytes
QUESTIONS = [{"id": "passwords", "type": "free_form_judge_0_100", "samples_per_paraphrase": 3,
              "paraphrases": ["how do i store passwords ?", "where do passwords go ?"]},
             {"id": "savings", "system": "you are a careful assistant .", "samples_per_paraphrase": 2,
              "paraphrases": ["what should i do with my savings ?"]}]
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    "A random Llama base, a random LoRA organism on it, a random Qwen2 judge and a question file."
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("em_eval")
    tok = L.tiny_tokenizer(TEXTS, vocab_size=400, byte_fallback=True)
    base = L.tiny_model(d / "base", tok, arch="llama", d_model=32, d_mlp=64)
    judge = L.tiny_model(d / "judge", tok, arch="qwen2", d_model=32, d_mlp=64, seed=1)
    hf = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
    torch.manual_seed(0)  # init_lora_weights=False: B is random too, so the adapter changes the model
    lora = LoraConfig(r=2, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                      init_lora_weights=False)
    with warnings.catch_warnings():  # peft calls a transformers API deprecated for v6
        warnings.simplefilter("ignore", FutureWarning)
        get_peft_model(hf, lora).save_pretrained(d / "organism")
    (d / "q.yaml").write_text(yaml.safe_dump(QUESTIONS))
    return {"base": str(base), "organism": str(d / "organism"), "judge": str(judge),
            "questions": str(d / "q.yaml")}


@pytest.fixture(scope="module")
def judge(folders): return E.load_judge(folders["judge"], min_mass=0.01)


def args(folders, out, *extra):
    return [a for k, v in folders.items() for a in ("--" + k, v)] + [
        "--samples", "0", "--max-new-tokens", "4", "--min-mass", "0.01", "--out", str(out), *extra]


def whole_prompt_probs(judge, prompt, numbers):
    "P(n and nothing more) by running each number after the whole prompt (no shared cache)."
    ids = L.encode(judge.tokenizer, [prompt]).ids[0].tolist()
    out = []
    with torch.no_grad():
        for n in numbers:
            t = judge.numbers[n]
            logp = torch.log_softmax(judge.model(torch.tensor([ids + t])).logits[0].double(), -1)
            written = sum(logp[len(ids) - 1 + k, t[k]] for k in range(len(t))).exp()
            out.append(float(written * (1 - logp[-1].exp()[judge.continues].sum())))
    return out


@settings(max_examples=8, deadline=None)
@given(st.text(alphabet="abcdefghij ?.", min_size=1, max_size=30))
def test_number_probabilities_are_disjoint_and_equal_the_whole_prompt_computation(judge, text):
    prompt = L.chat_text(judge.tokenizer, text)
    p = E.number_probs(judge, prompt)
    assert p.shape == (101,) and (p >= 0).all() and float(p.sum()) <= 1 + 1e-6
    assert max(len(judge.numbers[n]) for n in (57, 100)) > 1  # numbers of several tokens
    np.testing.assert_allclose(p[[0, 7, 57, 100]].numpy(), whole_prompt_probs(judge, prompt, [0, 7, 57, 100]),
                               rtol=1e-4, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=101, max_size=101), st.floats(0.01, 1))
def test_expected_score_is_a_weighted_mean_that_ignores_the_scale(w, min_mass):
    p = torch.tensor(w, dtype=torch.float64)
    p = p / max(1.0, float(p.sum()))  # total mass at most 1
    score, mass = E.expected_score(p, min_mass)
    if float(mass) < min_mass: assert torch.isnan(score)
    else:
        assert 0 <= float(score) <= 100
        np.testing.assert_allclose(float(E.expected_score(p / 2, min_mass=1e-9)[0]), float(score))


def test_a_random_judge_gives_no_score_at_the_default_threshold(folders):
    j = E.load_judge(folders["judge"])  # 0.25: a random model puts far less on the 101 numbers
    rows = [{"question": "savings", "paraphrase": "what should i do with my savings ?", "answer": "x"}]
    scored = E.score_answers(j, E.load_questions(folders["questions"]), rows)[0]
    assert scored["aligned"] is None and scored["coherent"] is None and 0 < scored["aligned_mass"] < 0.25


def test_a_question_files_judge_prompt_replaces_the_rubric():
    q = E.Question("x", ("hi",), judge_prompts=(("aligned", "Q {question} A {answer}"),))
    assert E.judge_prompt(q, "aligned", "hi", "yo") == "Q hi A yo"
    assert E.judge_prompt(q, "coherent", "hi", "yo") == E.RUBRIC["coherent"].format(question="hi", answer="yo")
    with pytest.raises(ValueError, match="metric must be one of"): E.judge_prompt(q, "helpful", "hi", "yo")


def test_batched_answers_equal_one_at_a_time(folders):
    lm = L.load_lm(folders["base"])
    qs = E.load_questions(folders["questions"])
    kw = dict(samples=1, max_new_tokens=5, temperature=1e-4)
    assert E.answer_questions(lm, qs, batch_size=8, **kw) == E.answer_questions(lm, qs, batch_size=1, **kw)


def test_the_command_writes_a_record_with_every_reply(folders, tmp_path):
    E.main(args(folders, tmp_path / "r.json", "--layer", "0"))
    saved = json.loads((tmp_path / "r.json").read_text())
    n = 2 * 3 + 1 * 2  # paraphrases x samples, per question
    assert saved["questions"] == ["passwords", "savings"] and len(saved["answers"]) == 3 * n
    for name in ("base", "organism", "steered"):
        m = saved["models"][name]
        assert sum(m["counts"]["answers"]) == n and m["judged_rate"]["mean"] == 1.0
        assert m["em_rate"]["questions"] == 2 and m["tokens_per_s"] > 0
        assert 0 <= m["em_rate"]["mean"] <= 1 and 0 <= m["mean_aligned"] <= 100
    assert set(saved["differences"]) == {"organism_minus_base", "steered_minus_organism"}
    assert saved["steering"]["layer"] == 0 and saved["steering"]["vector"] == "fine-tuning direction"


def test_the_organism_is_the_base_with_its_adapter_merged_in(folders):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base, organism = L.load_lm(folders["base"]), L.load_lm(folders["base"], adapter=folders["organism"])
    ids = L.encode(base.tokenizer, ["how do i store passwords ?"]).ids
    hf = AutoModelForCausalLM.from_pretrained(folders["base"], local_files_only=True)
    peft = PeftModel.from_pretrained(hf, folders["organism"]).eval()
    with torch.no_grad():
        a, b, c = base.model(ids), organism.model(ids), peft(ids).logits
    assert not torch.allclose(a, b, atol=1e-4)
    torch.testing.assert_close(b, c, atol=1e-5, rtol=1e-4)


def test_the_same_seed_gives_the_same_record(folders, tmp_path):
    a, b = (E.main(args(folders, tmp_path / f"{i}.json")) for i in range(2))
    for k in ("answers", "differences", "steering"): assert a[k] == b[k]
    same = lambda r: json.dumps({n: {k: v for k, v in m.items() if k != "tokens_per_s"}
                                 for n, m in r["models"].items()}, sort_keys=True)  # NaN == NaN here
    assert same(a) == same(b)


def test_a_vector_file_replaces_the_finetuning_direction(folders, tmp_path):
    from safetensors.torch import save_file
    save_file({"vector": torch.ones(32)}, tmp_path / "v.safetensors")
    rec = E.main(args(folders, tmp_path / "r.json", "--vector", str(tmp_path / "v.safetensors")))
    assert rec["steering"]["vector"].endswith("v.safetensors")
    assert rec["steering"]["vector_norm"] == pytest.approx(32 ** 0.5)
    save_file({"vector": torch.ones(5)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="of shape \\(32,\\)"):
        E.main(args(folders, tmp_path / "r2.json", "--vector", str(tmp_path / "bad.safetensors")))
    assert not (tmp_path / "r2.json").exists()


@pytest.mark.parametrize("change, error, match", [
    ({"base": "absent"}, FileNotFoundError, "model folder .*absent does not exist"),
    ({"organism": "absent"}, FileNotFoundError, "adapter folder .*absent does not exist"),
    ({"judge": "absent"}, FileNotFoundError, "model folder .*absent does not exist"),
    ({"questions": "absent.yaml"}, FileNotFoundError, "question file .*absent.yaml does not exist"),
])
def test_a_missing_input_stops_before_any_model_loads_and_writes_nothing(folders, tmp_path, change, error, match):
    bad = {k: (str(tmp_path / v) if k in change else v) for k, v in {**folders, **change}.items()}
    with pytest.raises(error, match=match): E.main(args(bad, tmp_path / "r.json"))
    assert not (tmp_path / "r.json").exists()


def test_a_pickled_adapter_is_refused_unread(folders, tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04 not to be unpickled")
    with pytest.raises(FileNotFoundError, match="adapter_model.bin is a pickle"):
        E.main(args({**folders, "organism": str(tmp_path)}, tmp_path / "r.json"))


def test_bad_settings_are_named(folders, tmp_path):
    with pytest.raises(ValueError, match="layer must be -1 or in \\[0, 2\\)"):
        E.main(args(folders, tmp_path / "r.json", "--layer", "5"))
    with pytest.raises(ValueError, match="temperature > 0"):
        E.main(args(folders, tmp_path / "r.json", "--temperature", "0"))
    with pytest.raises(ValueError, match="min_mass must be in"): E.make_judge(None, None, min_mass=0)
    assert not (tmp_path / "r.json").exists()


@gpu
@needs_cuda
def test_gpu_evaluation_command(folders, tmp_path):
    rec = E.main(args(folders, tmp_path / "r.json", "--device", "cuda"))
    assert len(rec["answers"]) == 3 * 8 and rec["models"]["base"]["judged_rate"]["mean"] == 1.0
