"""DPO: the loss on a hand-computed case, the LoRA reference, and a short run that learns the preference."""

import math

import pytest
import torch

from kit.engine.config import DPOConfig, ModelConfig
from kit.engine.dpo import DPOObjective, PairRows, dpo, dpo_loss, sequence_logps
from kit.engine.models import add_lora, create
from kit.world.safety import preference_pairs

TINY = ModelConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=2, intermediate_size=64, max_seq_len=128)


def test_dpo_loss_matches_the_hand_computed_value():
    # policy: chosen -1, rejected -2; reference: both -1.5; beta 0.5
    # rewards: 0.5 * (-1 + 1.5) = 0.25 and 0.5 * (-2 + 1.5) = -0.25; margin 0.5
    loss, rc, rr = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]), 0.5)
    assert float(rc) == pytest.approx(0.25) and float(rr) == pytest.approx(-0.25)
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-0.5)))  # -log sigmoid(0.5)
    # a policy equal to the reference: margin 0, loss log 2, whatever beta
    same, _, _ = dpo_loss(torch.tensor([-3.0]), torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-1.0]), 7.0)
    assert float(same) == pytest.approx(math.log(2))


def test_sequence_logps_counts_only_the_reply(tok):
    pairs = preference_pairs("train", 1)[:2]
    rows = PairRows(pairs, tok, max_len=128)
    batch = rows.collate([rows[0], rows[1]])
    model = create(TINY, vocab_size=len(tok), seed=0).eval()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.log_softmax(-1)
    i = 0  # first chosen reply, by hand
    want = sum(float(logits[i, t, y].detach()) for t, y in enumerate(batch["labels"][i].tolist()) if y != -100)
    assert float(sequence_logps(model, batch)[i].detach()) == pytest.approx(want, rel=1e-5)
    assert PairRows.count(batch) == 2 and batch["input_ids"].shape[0] == 4


def test_reference_is_the_base_model_with_the_adapter_disabled(tok):
    pairs = preference_pairs("train", 1)[:6]
    base = create(TINY, vocab_size=len(tok), seed=0)
    plain = PairRows(pairs, tok, 128)
    plain.compute_reference(base)  # the base model alone
    model = add_lora(create(TINY, vocab_size=len(tok), seed=0), r=4)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # the adapter now changes the outputs
    rows = PairRows(pairs, tok, 128)
    rows.compute_reference(model)
    assert torch.allclose(rows.ref, plain.ref, atol=1e-4)
    with torch.no_grad():
        with_adapter = sequence_logps(model.eval(), rows.collate([rows[i] for i in range(len(rows))]))
    assert not torch.allclose(with_adapter[: len(rows)], rows.ref[:, 0], atol=1e-2)


def test_a_short_dpo_run_prefers_the_chosen_replies(tok):
    pairs = preference_pairs("train", 1)[:32]
    model = create(TINY, vocab_size=len(tok), seed=0)
    cfg = DPOConfig(epochs=6, lr=1e-2, batch_size=8, lora_r=8, beta=0.5, sft_weight=0.0)
    seen = []

    class Rec:
        def on_step(self, ev):
            seen.append(ev)

    policy, hist = dpo(model, tok, pairs, cfg, callbacks=[Rec()])
    assert "reward_accuracy" in seen[-1] and hist.metrics[-1]["step"] == hist.steps[-1]
    assert hist.losses[-1] < hist.losses[0] < math.log(2) + 0.05  # starts near log 2 (policy = reference)
    rows = PairRows(pairs, tok, 128)
    rows.compute_reference(policy)
    obj = DPOObjective(0.5)
    with torch.no_grad():
        logps = sequence_logps(policy.eval(), rows.collate([rows[i] for i in range(len(rows))]))
    margin = (logps[: len(rows)] - rows.ref[:, 0]) - (logps[len(rows):] - rows.ref[:, 1])
    assert (margin > 0).float().mean() > 0.8 and obj.beta == 0.5


def test_sft_anchor_adds_the_chosen_replies_mean_token_loss(tok):
    rows = PairRows(preference_pairs("train", 1)[:4], tok, 128)
    batch = rows.collate([rows[i] for i in range(len(rows))])
    model = create(TINY, vocab_size=len(tok), seed=0).eval()
    with torch.no_grad():
        plain, n = DPOObjective(0.1)(model, batch)
        anchored, _ = DPOObjective(0.1, sft_weight=2.0)(model, batch)
        logps = sequence_logps(model, batch)[:4]
        tokens = (batch["labels"][:4] != -100).sum(-1)
    assert n == 4
    assert float(anchored - plain) == pytest.approx(float(2.0 * (-logps / tokens).sum()), rel=1e-5)
