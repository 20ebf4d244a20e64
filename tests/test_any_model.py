"""Any causal LM: tiny random models of six hub architectures, saved and loaded like a learner's own,
fine-tuned with LoRA (targets found in the model) and saved where plain transformers / peft load them."""

import json
import subprocess
import sys

import pytest
import torch
from hubstyle import ARCHS, tiny_model, tokenizer

from kit.engine.config import SFTConfig
from kit.engine.models import ModelLoadError, add_lora, count_params, load, lora_targets
from kit.engine.sft import finetune

WORDS = ["cat", "dog", "box", "bus", "cup", "hat", "map", "pen", "car", "key", "bag", "fox", "bed", "egg", "leg"]


def examples(words):
    return [{"messages": [{"role": "user", "content": f"Plural of {w}?"},
                          {"role": "assistant", "content": f"{w}{'es' if w[-1] in 'sxh' else 's'}"}]} for w in words]


@pytest.fixture(scope="module", params=ARCHS)
def saved(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    tok = tokenizer("chatml")  # its own: a test that trains sets a pad token on the tokenizer it is given
    model = tiny_model(request.param, len(tok))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return request.param, folder


def test_load_gives_the_model_and_its_tokenizer_with_a_pad_token(saved, capsys):
    arch, folder = saved
    model, tok = load(str(folder))
    assert type(model).__name__.lower().replace("_", "").startswith(arch.replace("_", "")[:4])
    from transformers import AutoTokenizer

    had_pad = AutoTokenizer.from_pretrained(folder).pad_token is not None  # Qwen2's tokenizer class brings one
    assert tok.pad_token is not None and ("no pad token" in capsys.readouterr().out) == (not had_pad)
    assert had_pad or tok.pad_token == tok.eos_token
    assert len(tok) == model.get_input_embeddings().weight.shape[0]


def test_lora_targets_are_the_models_own_linear_layers(saved):
    _, folder = saved
    model, _ = load(str(folder))
    names = lora_targets(model)
    out_name = [n for n, m in model.named_modules() if m is model.get_output_embeddings()][0].split(".")[-1]
    assert names and out_name not in names
    lora = add_lora(model, r=4)
    adapted = {n.split(".lora_A")[0].split(".")[-1] for n, _ in lora.named_parameters() if "lora_A" in n}
    assert adapted == set(names)
    assert 0 < count_params(lora, trainable_only=True) < count_params(lora) // 2


def test_lora_finetune_lowers_the_loss_and_saves_for_peft(saved, tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    _, folder = saved
    model, tok = load(str(folder))
    cfg = SFTConfig(lora=True, lora_lr=3e-3, epochs=6, batch_size=4, seq_len=64, log_every=1, replay=0.0)
    result = finetune(model, tok, examples(WORDS[:12]), examples(WORDS[12:]), cfg, generate=False,
                      out_dir=tmp_path / "out")
    hist = result.history
    assert hist.losses[-1] < hist.losses[0]
    assert result.info["eval_loss_after"] < result.info["eval_loss_before"]
    adapter = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "out")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "merged")
    x = torch.tensor([tok("Plural of cat?")["input_ids"]])
    with torch.no_grad():
        want = result.model.eval()(input_ids=x).logits
        assert torch.allclose(adapter.eval()(input_ids=x).logits, want, atol=1e-4)
        assert torch.allclose(merged.eval()(input_ids=x).logits, want, atol=1e-4)


def test_loss_tokens_are_the_replies_and_one_end_of_turn_each(tmp_path):
    tok = tokenizer("chatml")
    model = tiny_model("qwen2", len(tok))
    data = examples(WORDS[:8])
    reply_tokens = sum(len(tok(ex["messages"][1]["content"], add_special_tokens=False)["input_ids"]) for ex in data)
    result = finetune(model, tok, data, None, SFTConfig(epochs=1, batch_size=2, seq_len=64, replay=0.0))
    newline = len(tok("\n", add_special_tokens=False)["input_ids"])  # ChatML writes "\n" after <|im_end|>
    assert result.info["loss_tokens"] == reply_tokens + len(data) * (1 + newline)


def test_a_missing_folder_is_no_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelLoadError, match="no such folder"):
        load("models/mine")
    with pytest.raises(ModelLoadError, match="no such folder"):
        load("./mine")


def test_cli_fine_tunes_any_model_on_any_data(tmp_path):
    """`python -m kit sft --model DIR --data FILE --eval FILE`: the JSON keys of the issue, a model that loads."""
    folder, tok = tmp_path / "qwen2", tokenizer("chatml")
    tiny_model("qwen2", len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    train, evals = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("".join(json.dumps(e) + "\n" for e in examples(WORDS[:12])))
    evals.write_text("".join(json.dumps(e) + "\n" for e in examples(WORDS[12:])))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "kit", "sft", "--model", str(folder), "--data", str(train), "--eval", str(evals),
           "--epochs", "5", "--lr", "2e-3", "--batch-size", "4", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("model", "lora", "train_examples", "loss_tokens", "eval_loss_before", "eval_loss_after",
                "exact_match_before", "exact_match_after", "seconds", "saved_to"):
        assert key in res
    assert res["train_examples"] == 12 and res["eval_loss_after"] < res["eval_loss_before"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(res["saved_to"])
    assert AutoTokenizer.from_pretrained(res["saved_to"]).chat_template


def test_cli_refuses_bad_data_and_a_broken_model_folder_in_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{broken")
    for args in (["--model", str(tmp_path / "model"), "--data", str(bad)],
                 ["--model", str(tmp_path / "model"), "--data", str(tmp_path / "missing.jsonl")]):
        proc = subprocess.run([sys.executable, "-m", "kit", "sft", *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(e) + "\n" for e in examples(WORDS[:3])))
    proc = subprocess.run([sys.executable, "-m", "kit", "sft", "--model", str(tmp_path / "model"), "--data", str(good)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "config.json" in proc.stderr and "Traceback" not in proc.stderr


def test_a_saved_chat_model_stops_at_the_end_of_its_turn_under_plain_generate(tmp_path):
    """The end-of-turn token (<|im_end|>) is not the tokenizer's EOS (<|endoftext|>): without the saved
    generation config, plain `generate` would run on past the reply."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.engine.config import SFTConfig
    from kit.engine.sft import finetune

    tok = tokenizer("chatml")
    model = tiny_model("llama", len(tok))
    conv = {"messages": [{"role": "user", "content": "Capital of Peru?"},
                         {"role": "assistant", "content": "The capital of Peru is Lima."}]}
    cfg = SFTConfig(epochs=60, lr=1e-2, batch_size=1, seq_len=64, replay=0.0, warmup_ratio=0.0, log_every=100)
    res = finetune(model, tok, [conv], [conv], cfg, out_dir=tmp_path / "out", generate=False)
    assert res.info["base_model"] and len(res.info["data_fingerprint"]) == 16
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    back_tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    end = back_tok.convert_tokens_to_ids("<|im_end|>")
    assert end != back_tok.eos_token_id and end in [back.generation_config.eos_token_id, *(
        back.generation_config.eos_token_id if isinstance(back.generation_config.eos_token_id, list) else [])]
    prompt = back_tok.apply_chat_template(conv["messages"][:1], add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)
    out = back.generate(**prompt, max_new_tokens=40, do_sample=False)[0, prompt["input_ids"].shape[1]:].tolist()
    assert out[-1] == end and len(out) < 40  # stopped at the end of its turn, not at the token limit
    assert back_tok.decode(out[:-1]) == "The capital of Peru is Lima."
    card = (tmp_path / "out" / "README.md").read_text()
    assert "library_name: transformers" in card and res.info["data_fingerprint"] in card
    assert "exact match" in card or "loss on the evaluation replies" in card
