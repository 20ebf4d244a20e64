import threading

import pytest
import torch

from kit.engine.config import ConfigError, ModelConfig, TrainConfig
from kit.engine.models import create
from kit.engine.train import TokenRows, batches, evaluate_loss, lr_factor, train

TINY = ModelConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=2, intermediate_size=64, max_seq_len=64)


def pattern_rows(seq_len=16, n=4000):
    # a learnable stream: 0 1 2 ... 9 0 1 2 ...
    return TokenRows(torch.arange(n) % 10, seq_len)


def test_loss_falls_on_a_tiny_corpus():
    model = create(TINY, vocab_size=16, seed=0)
    rows = pattern_rows()
    cfg = TrainConfig(max_steps=60, batch_size=8, seq_len=16, lr=1e-2, warmup_steps=5, log_every=10, eval_every=0)
    before = evaluate_loss(model, rows, cfg)
    hist = train(model, rows, cfg, val_data=rows)
    assert hist.losses[-1] < 0.5 * hist.losses[0]
    assert hist.val_losses[-1] < 0.2 * before
    assert hist.tokens == 60 * 8 * 16


def test_accumulation_1x8_equals_8x1():
    rows = pattern_rows()
    weights = []
    for bs, acc in ((8, 1), (1, 8)):
        model = create(TINY, vocab_size=16, seed=0)
        train(model, rows, TrainConfig(max_steps=3, batch_size=bs, grad_accum=acc, seq_len=16, warmup_steps=1,
                                       eval_every=0))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-5)


def test_stop_event_ends_the_run_before_the_next_step():
    stop = threading.Event()

    class StopAt:
        def on_step(self, ev):
            if ev["step"] == 4:
                stop.set()

    model = create(TINY, vocab_size=16, seed=0)
    hist = train(model, pattern_rows(), TrainConfig(max_steps=50, batch_size=4, seq_len=16, warmup_steps=1,
                                                     log_every=1, eval_every=0), callbacks=[StopAt()], stop=stop)
    assert hist.stopped and hist.steps[-1] == 4


def test_events_carry_plain_numbers():
    seen = {"step": [], "eval": [], "end": []}

    class Rec:
        def on_step(self, ev):
            seen["step"].append(ev)

        def on_eval(self, ev):
            seen["eval"].append(ev)

        def on_end(self, hist):
            seen["end"].append(hist)

    model = create(TINY, vocab_size=16, seed=0)
    rows = pattern_rows()
    train(model, rows, TrainConfig(max_steps=10, batch_size=4, seq_len=16, warmup_steps=1, log_every=5,
                                   eval_every=5), val_data=rows, callbacks=[Rec()])
    assert [e["step"] for e in seen["step"]] == [5, 10]
    assert [e["step"] for e in seen["eval"]] == [5, 10]
    assert all(isinstance(e["loss"], float) and e["tokens_per_s"] > 0 for e in seen["step"])
    assert len(seen["end"]) == 1


def test_schedule_warms_up_then_decays_to_floor():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(55, cfg) < lr_factor(20, cfg)
    assert lr_factor(100, cfg) == pytest.approx(0.1)


def test_epochs_are_reshuffled_and_seeded():
    rows = TokenRows(torch.arange(33), seq_len=4)  # 8 rows
    a = [b["input_ids"][0, 0].item() for _, b in zip(range(4), batches(rows, 4, seed=1))]
    b = [b["input_ids"][0, 0].item() for _, b in zip(range(4), batches(rows, 4, seed=1))]
    assert a == b
    first_epoch = {x.item() for bt in list(zip(range(2), batches(rows, 4, seed=1))) for x in bt[1]["input_ids"][:, 0]}
    assert first_epoch == {0, 4, 8, 12, 16, 20, 24, 28}  # every row once per epoch


def test_bad_config_is_refused_before_training():
    model = create(TINY, vocab_size=16, seed=0)
    with pytest.raises(ConfigError, match="2 problems"):
        train(model, pattern_rows(), TrainConfig(max_steps=0, warmup_steps=0, lr=0.0))


def test_gradient_checkpointing_recomputes_but_gives_the_same_update():
    rows = pattern_rows()
    out = []
    for ckpt in (False, True):
        model = create(TINY, vocab_size=16, seed=0)
        train(model, rows, TrainConfig(max_steps=3, batch_size=4, seq_len=16, warmup_steps=1, eval_every=0,
                                       gradient_checkpointing=ckpt))
        out.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        assert model.is_activation_checkpointing == ckpt
    assert torch.allclose(out[0], out[1], atol=1e-6)


def test_paused_time_is_not_training_time():
    import time

    model = create(TINY, vocab_size=16, seed=0)
    pause = threading.Event()

    class PauseOnce:
        def on_step(self, ev):
            if ev["step"] == 2:
                pause.set()
                threading.Timer(0.8, pause.clear).start()

    cfg = TrainConfig(max_steps=4, batch_size=4, seq_len=16, warmup_steps=1, log_every=1, eval_every=0)
    t0 = time.perf_counter()
    hist = train(model, pattern_rows(), cfg, callbacks=[PauseOnce()], pause=pause)
    wall = time.perf_counter() - t0
    assert wall >= 0.8 and hist.seconds <= wall - 0.7  # the 0.8 s pause is left out of the training time


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "phi3", "gpt2", "gpt_neox"])
def test_the_loss_runs_the_output_layer_only_where_a_label_is_and_equals_the_whole_pass(arch):
    import torch.nn.functional as F
    from hubstyle import tiny_model

    from kit.engine.losses import IGNORE, causal_lm_loss, split_head, token_losses

    model = tiny_model(arch, vocab_size=96).eval()  # no dropout: the two ways must give the same numbers
    torch.manual_seed(0)
    ids = torch.randint(0, 96, (2, 12))
    labels = ids.roll(-1, 1).masked_fill(torch.rand(2, 12) < 0.6, IGNORE)
    batch = {"input_ids": ids, "labels": labels}
    full = F.cross_entropy(model(input_ids=ids).logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                           reduction="sum")
    loss, n = causal_lm_loss(model, batch)
    assert torch.allclose(loss, full, rtol=1e-4) and n == (labels != IGNORE).sum()
    per_token, _ = token_losses(model, batch)
    assert torch.allclose(per_token.sum(), full, rtol=1e-4) and (per_token[labels.flatten() == IGNORE] == 0).all()
    assert split_head(model) is not None  # every one of these architectures splits: logits = head(last state)
    calls = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    causal_lm_loss(model, batch)
    hook.remove()
    assert calls == [torch.Size([int(n), calls[0][-1]])]  # the output layer saw the labelled positions only


def test_a_model_that_changes_its_logits_keeps_the_whole_pass():
    from kit.engine.losses import IGNORE, causal_lm_loss, split_head

    model = create(ModelConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=2, intermediate_size=64), 64)
    plain_forward = model.forward

    def capped(*a, **k):  # a logit cap after the output layer, as Gemma 2 has: head(state) is not the logits
        out = plain_forward(*a, **k)
        out.logits = 5 * torch.tanh(out.logits / 5)
        return out

    model.forward = capped
    assert split_head(model) is None
    ids = torch.randint(0, 64, (1, 8))
    labels = ids.roll(-1, 1)
    labels[0, -1] = IGNORE
    loss, _ = causal_lm_loss(model, {"input_ids": ids, "labels": labels})
    expected = torch.nn.functional.cross_entropy(capped(input_ids=ids).logits[0, :-1], labels[0, :-1],
                                                 reduction="sum")
    assert torch.allclose(loss, expected, rtol=1e-5)
