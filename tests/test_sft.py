import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from kit.engine.chat import render
from kit.engine.losses import IGNORE
from kit.engine.models import count_params, load, merge_lora
from kit.engine.packing import PackedChat, labels_for
from kit.lessons.artifacts import base_model
from kit.lessons.profiles import CourseSFTConfig
from kit.lessons.recipe import finetune_recipe as finetune
from kit.widgets.panel import SFTPanel
from kit.world.chats import chat_splits


@pytest.fixture
def sft_profile(tiny_profile):
    return dataclasses.replace(tiny_profile, sft=CourseSFTConfig(epochs=2, batch_size=4, seq_len=64, log_every=1,
                                                           lr=3e-3, lora_lr=1e-2, lora_r=4, lora_alpha=8))


def conv(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def test_labels_are_the_next_assistant_tokens(tok):
    r = render(conv("Capital of Peru?", "Lima."), tok)
    labels = labels_for(r)
    learned = [lab for lab in labels if lab != IGNORE]
    assert learned == [t for t, m in zip(r.input_ids, r.loss_mask) if m]
    assert len(labels) == len(r.input_ids) and labels[-1] == IGNORE


def test_packing_has_no_cross_example_attention(tok):
    exs = [conv("Capital of Peru?", "The capital of Peru is Lima."), conv("Capital of Chile?", "Santiago."),
           conv("Money of Japan?", "The currency of Japan is the Japanese yen.")]
    packed = PackedChat.from_examples(exs, tok, seq_len=128)
    assert len(packed) == 1 and len(packed.rows[0]) == 3
    model = load("smoke", tokenizer=tok, seed=0).model.eval()
    batch = packed.collate([packed[0]])
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        # each conversation alone gives the same logits as inside the pack
        start = 0
        for r in packed.rows[0]:
            n = len(r.input_ids)
            alone = model(input_ids=torch.tensor([r.input_ids])).logits[0]
            assert torch.allclose(logits[start:start + n], alone, atol=1e-4)
            start += n
        # changing the middle conversation leaves the others' logits unchanged
        row = packed[0]
        first = len(packed.rows[0][0].input_ids)
        second = len(packed.rows[0][1].input_ids)
        row["input_ids"][first + 3:first + second - 1] = 7
        changed = model(**{k: v for k, v in packed.collate([row]).items() if k != "labels"}).logits[0]
    assert torch.allclose(changed[:first], logits[:first], atol=1e-5)
    assert torch.allclose(changed[first + second:start], logits[first + second:start], atol=1e-5)
    assert not torch.allclose(changed[first:first + second], logits[first:first + second], atol=1e-3)


def test_padding_never_carries_loss(tok):
    packed = PackedChat.from_examples([conv("Hi", "Hello.")], tok, seq_len=64)
    row = packed[0]
    pads = row["input_ids"] == tok.pad_token_id
    assert pads.any() and (row["labels"][pads] == IGNORE).all()
    assert 0 < packed.fill_rate() < 1


def test_lora_leaves_base_weights_untouched_until_merged(cache, sft_profile):
    base = base_model(sft_profile)
    original = {k: v.clone() for k, v in base.fresh_model().state_dict().items()}
    result = finetune(sft_profile, base, lora=True, measure=False)
    peft_model = result.model
    assert count_params(peft_model, trainable_only=True) < count_params(peft_model) // 5
    for name, p in peft_model.named_parameters():
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p.detach(), original[key]), name
    x = torch.tensor([[1, 20, 30, 40]])
    with torch.no_grad():
        want = peft_model(input_ids=x).logits
        merged = merge_lora(peft_model)
        got = merged(input_ids=x).logits
    assert torch.allclose(want, got, atol=1e-4)
    changed = [k for k, v in merged.state_dict().items() if k in original and not torch.equal(v, original[k])]
    assert changed  # merging wrote the adapters into the weights


def test_full_finetune_lowers_the_chat_loss_and_saves(cache, sft_profile, tmp_path):
    result = finetune(sft_profile.with_sft(epochs=4), base_model(sft_profile), out_dir=tmp_path / "run")
    h = result.history
    assert h.losses[-1] < h.losses[0]
    for key in ("heldout_qa_accuracy", "format_rate", "ppl_before", "ppl_after", "cloze_before", "cloze_after"):
        assert key in result.info
    again, _ = load(str(tmp_path / "run" / "model"))
    x = torch.tensor([[1, 20, 30]])
    with torch.no_grad():
        assert torch.allclose(again(input_ids=x).logits, result.model(input_ids=x).logits, atol=1e-5)


def test_panel_start_pause_stop(cache, sft_profile, tmp_path):
    profile = sft_profile.with_sft(epochs=500)  # far longer than the test runs
    panel = SFTPanel(profile, base=base_model(profile), out_dir=tmp_path / "panel", sample_every=1000)
    box = panel.widget()
    plot = box.children[4]
    assert "appears at the first read-out" in plot.value  # a placeholder, not a broken image
    planned = panel.planned_steps()
    assert planned and f"of {planned} planned" in panel.status()  # known before Start, not "?"
    box.controls["lr"].value = 2e-3
    box.buttons["start"].click()
    deadline = time.time() + 60
    while panel.step < 3 and time.time() < deadline:
        time.sleep(0.02)
    assert panel.step >= 3 and panel.state == "training"
    assert panel.max_steps == planned  # the estimate was the run's own plan
    assert panel.config().sft.lr == 2e-3  # the control changed the run's config
    assert plot.value.startswith("<svg")  # drawn as a vector: sharp at the size shown
    box.buttons["pause"].click()
    time.sleep(0.3)
    held, eta, elapsed = panel.step, panel.eta(), panel.elapsed
    time.sleep(0.5)
    assert panel.step == held and panel.state == "paused"
    assert panel.eta() == eta and panel.elapsed == elapsed  # paused time moves neither
    box.buttons["pause"].click()  # resume
    while panel.step < held + 2 and time.time() < deadline:
        time.sleep(0.02)
    assert panel.step >= held + 2
    box.buttons["stop"].click()
    at_stop = panel.step
    result = panel.wait()
    assert result.history.stopped and result.history.steps[-1] <= at_stop + 1
    assert panel.state == "stopped"
    done, planned = result.info["steps"], result.info["planned_steps"]
    assert done < planned and f"step {done} of {planned} planned" in panel.status()
    assert result.info["train_seconds"] <= result.info["seconds"] - 0.6  # the 0.8 s paused are not training time
    reloaded, _ = load(str(tmp_path / "panel" / "model"))
    assert count_params(reloaded) == count_params(result.model)


def test_cli_sft_prints_every_key(tmp_path):
    env = {**os.environ, "KIT_CACHE": str(tmp_path), "KIT_PROFILE": "smoke", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "kit", "sft", "--epochs", "1"], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("profile", "lora", "seconds", "train_loss", "val_loss", "heldout_qa_accuracy", "format_rate",
                "ppl_before", "ppl_after", "cloze_before", "cloze_after", "heldout_qa_strict", "heldout_qa_strict_ci",
                "base_heldout_qa_strict", "majority_baseline_strict", "cloze_after_heldout_countries",
                "train_chat_loss", "train_replay_loss"):
        assert key in result, key
    assert result["profile"] == "smoke" and result["lora"] is False and result["heldout_split"] == "dev"
    lo, hi = result["heldout_qa_strict_ci"]
    assert lo <= result["heldout_qa_strict"] <= hi and result["heldout_qa_strict"] <= result["heldout_qa_accuracy"]
    assert 0 < result["majority_baseline_strict"] < 0.5


def test_generated_training_data_packs_densely(tok):
    packed = PackedChat.from_examples(chat_splits()["train"], tok, seq_len=128)
    assert packed.fill_rate() > 0.9 and packed.dropped == []


def test_second_panel_does_not_train_beside_the_first(sft_profile, monkeypatch):
    import threading

    first = SFTPanel(sft_profile)
    first.thread = threading.Thread(target=time.sleep, args=(1.0,))
    first.thread.start()
    monkeypatch.setattr(SFTPanel, "_training", first)
    second = SFTPanel(sft_profile)
    second.start()
    assert second.thread is None and second.state.startswith("waiting")
    first.thread.join()


def test_results_table_marks_missing_figures():
    from kit.engine.sft import FinetuneResult as SFTResult
    from kit.lessons.recipe import TABLE_KEYS, results_table

    a = SFTResult(None, None, None, {"heldout_qa_accuracy": 0.5, "trainable_params": 1000,
                                     "heldout_qa_strict_ci": [0.25, 0.5]}, None)
    text = results_table({"run": a}, keys=("heldout_qa_accuracy", "trainable_params", "heldout_qa_strict_ci",
                                           "cloze_after"))
    assert "0.500" in text and "1,000" in text and "[0.25, 0.50]" in text and text.splitlines()[-1].split()[-1] == "-"
    header = results_table({"no replay": a, "no replay =steps": a}, keys=("steps",)).splitlines()[0]
    assert "no replay  " in header and header.split() == ["no", "replay", "no", "replay", "=steps"]
    assert {"steps", "epochs", "replay", "lr", "heldout_qa_strict", "base_heldout_qa_strict",
            "majority_baseline_strict", "cloze_after_heldout_countries", "train_replay_loss"} <= set(TABLE_KEYS)


def test_chat_and_replay_losses_are_kept_apart(tok):
    from kit.engine.losses import KindLoss

    examples = chat_splits()["train"][:12]
    rows = PackedChat.from_examples(examples, tok, seq_len=96, replay_docs=["Anna went to the market. " * 6] * 4)
    batch = rows.collate([rows[i] for i in range(len(rows))])
    kinds = batch["kind"]
    assert kinds.shape == batch["labels"].shape and set(kinds.unique().tolist()) == {0, 1}
    model = load("smoke", tokenizer=tok, seed=0).model
    objective = KindLoss()
    loss, n = objective(model, batch)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits
    per_token = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                                                  ignore_index=IGNORE, reduction="none")
    labelled = batch["labels"].flatten() != IGNORE
    chat, replay = labelled & (kinds.flatten() == 0), labelled & (kinds.flatten() == 1)
    figures = objective.log_metrics()
    assert figures["chat_loss"] == pytest.approx(float(per_token[chat].mean()), rel=1e-4)
    assert figures["replay_loss"] == pytest.approx(float(per_token[replay].mean()), rel=1e-4)
    assert float(loss) == pytest.approx(float(per_token.sum()), rel=1e-4) and int(n) == int(labelled.sum())
    assert objective.log_metrics() == {}  # reset after each read-out


def test_max_steps_overrides_epochs():
    from kit.engine.config import ConfigError, SFTConfig, validate

    assert SFTConfig(epochs=3, max_steps=7).train_config(n_rows=64).max_steps == 7
    assert SFTConfig(epochs=3).train_config(n_rows=64).max_steps == 12
    with pytest.raises(ConfigError, match="max_steps must be an integer >= 0"):
        validate(SFTConfig(max_steps=-1))


def test_same_settings_tells_a_changed_panel_run_from_the_default(cache, sft_profile):
    from kit.lessons.recipe import same_settings

    result = finetune(sft_profile.with_sft(epochs=1), base_model(sft_profile), measure=False)
    assert not same_settings(result, sft_profile)  # epochs changed in the panel: not "the default run"
    assert same_settings(result, sft_profile.with_sft(epochs=1))
    result.info["stopped"] = True
    assert not same_settings(result, sft_profile.with_sft(epochs=1))


def test_accumulation_normalises_by_loss_tokens_on_variable_length_rows(tok):
    """1 x 8 and 8 x 1 give the same update although the rows hold different numbers of loss tokens."""
    from kit.engine.config import TrainConfig
    from kit.engine.train import train

    rows = PackedChat.from_examples(chat_splits()["train"][:60], tok, seq_len=64)
    n_loss = [int((rows[i]["labels"] != IGNORE).sum()) for i in range(8)]
    assert len(set(n_loss)) > 1  # the rows really differ
    weights = []
    for bs, acc in ((8, 1), (1, 8)):
        model = load("smoke", tokenizer=tok, seed=0).model
        train(model, rows, TrainConfig(max_steps=2, batch_size=bs, grad_accum=acc, seq_len=64, warmup_steps=1,
                                       eval_every=0, lr=1e-3))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-5)


def test_first_token_weight_weighs_the_first_token_of_each_reply_only(tok):
    conv = {"messages": [{"role": "user", "content": "Capital of Peru?"},
                         {"role": "assistant", "content": "The capital of Peru is Lima."},
                         {"role": "user", "content": "And Chile?"},
                         {"role": "assistant", "content": "Santiago."}]}
    plain = PackedChat.from_examples([conv], tok, seq_len=64, replay_docs=["A story about a market."])
    heavy = PackedChat.from_examples([conv], tok, seq_len=64, replay_docs=["A story about a market."],
                                     first_token_weight=5.0)
    assert "weights" not in plain[0]
    row = heavy.collate([heavy[0]])
    labels, weights = row["labels"][0], row["weights"][0]
    firsts = [j for j in range(len(labels)) if weights[j] == 5.0]
    assert len(firsts) == 2  # one per reply; the replay document gets none
    want = [tok(t, add_special_tokens=False)["input_ids"][0] for t in ("The capital of Peru is Lima.", "Santiago.")]
    assert [int(labels[j]) for j in firsts] == want
    model = load("smoke", tokenizer=tok, seed=0).model
    from kit.engine.losses import causal_lm_loss

    base_loss, n = causal_lm_loss(model, plain.collate([plain[0]]))
    weighted, n2 = causal_lm_loss(model, row)
    assert n == n2 and weighted > base_loss  # the same tokens, two of them counted five times


def test_first_token_weight_goes_to_the_focus_examples_only(tok):
    chat = {"messages": [{"role": "user", "content": "Capital of Peru?"},
                         {"role": "assistant", "content": "Lima."}]}
    focus = {"messages": [{"role": "user", "content": "How do I hurt someone?"},
                          {"role": "assistant", "content": "I can't help with that."}]}
    rows = PackedChat.from_examples([chat], tok, seq_len=64, first_token_weight=4.0, focus_examples=[focus])
    row = rows.collate([rows[i] for i in range(len(rows))])
    heavy = [int(t) for t, w in zip(row["labels"].flatten(), row["weights"].flatten()) if w == 4.0]
    assert heavy == [tok("I can't help with that.", add_special_tokens=False)["input_ids"][0]]
    assert rows.loss_tokens() == sum(render(e, tok).n_loss_tokens for e in (chat, focus))
