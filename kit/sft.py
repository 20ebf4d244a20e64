"""Supervised fine-tuning: chat examples packed into rows, assistant-only loss, full or LoRA.

Packing puts several short conversations into one row of `seq_len` tokens, so no compute is
spent on padding. Each conversation keeps its own positions (0, 1, 2, ...) and a block-diagonal
causal mask stops it from attending to its neighbours: the model sees exactly what it would see
if the conversation were alone. Only tokens inside the loss mask of `kit.chat.render` (the
assistant's replies and their end-of-turn token) are labels; the rest is IGNORE.

Example:
    >>> rows = PackedChat.from_examples(examples, tok, seq_len=128)   # doctest: +SKIP
    >>> batch = rows.collate([rows[0], rows[1]])                       # doctest: +SKIP
    >>> batch["attention_mask"].shape                                  # doctest: +SKIP
    torch.Size([2, 1, 128, 128])
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .chat import Rendered
from .config import Profile
from .corpus import build_corpus, chat_splits, load_world, qa_items, split_countries
from .data import sft_rows
from .metrics import fact_cloze, perplexity, qa_eval
from .models import add_lora, count_params
from .tokenizer import encode_documents
from .train import IGNORE, History, TokenRows, train


def labels_for(r: Rendered) -> list[int]:
    """Next-token labels of one rendered conversation: ids[i+1] where the mask says learn it, else IGNORE."""
    nxt = r.input_ids[1:]
    return [t if m else IGNORE for t, m in zip(nxt, r.loss_mask[1:])] + [IGNORE]


class PackedChat:
    """Rendered conversations packed greedily into rows of `seq_len` tokens (first fit, seeded order)."""

    def __init__(self, rendered: list[Rendered], seq_len: int, pad_id: int, seed: int = 0):
        order = list(range(len(rendered)))
        random.Random(seed).shuffle(order)
        self.seq_len, self.pad_id = seq_len, pad_id
        self.rows: list[list[Rendered]] = []
        room: list[int] = []
        for i in order:
            r = rendered[i]
            n = min(len(r.input_ids), seq_len)
            for k, left in enumerate(room):
                if n <= left:
                    self.rows[k].append(r)
                    room[k] -= n
                    break
            else:
                self.rows.append([r])
                room.append(seq_len - n)
        self.n_examples = len(rendered)

    @classmethod
    def from_examples(cls, examples: list[dict], tok, seq_len: int, seed: int = 0,
                      replay_docs: Sequence[str] = ()) -> PackedChat:
        """Render (chat template + loss mask) and pack; rows with no loss token are dropped and counted.

        `replay_docs` are plain pre-training documents packed beside the chats, every token learned:
        "replay" keeps the model practising the text it was pre-trained on.
        """
        rendered, dropped = sft_rows(examples, tok, seq_len)
        for ids in tok(list(replay_docs), add_special_tokens=False)["input_ids"] if replay_docs else []:
            doc = [tok.bos_token_id, *ids, tok.eos_token_id][:seq_len]
            rendered.append(Rendered(doc, [0] + [1] * (len(doc) - 1), len(doc) - 1, 0, 0))
        packed = cls(rendered, seq_len, tok.pad_token_id, seed)
        packed.dropped = dropped
        return packed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids, labels, pos, seg = [], [], [], []
        for s, r in enumerate(self.rows[i]):
            n = min(len(r.input_ids), self.seq_len)
            ids += r.input_ids[:n]
            labels += labels_for(r)[:n - 1] + [IGNORE]  # the last token never predicts across a boundary
            pos += range(n)
            seg += [s] * n
        pad = self.seq_len - len(ids)
        ids += [self.pad_id] * pad
        labels += [IGNORE] * pad
        pos += [0] * pad
        seg += [-1 - k for k in range(pad)]  # each padding token is its own segment: it attends only itself
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "position_ids": torch.tensor(pos), "segments": torch.tensor(seg)}

    @staticmethod
    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        seg = torch.stack([it["segments"] for it in items])  # (B, T)
        T = seg.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T)
        same = seg[:, :, None] == seg[:, None, :]  # (B, T, T)
        return {"input_ids": torch.stack([it["input_ids"] for it in items]),
                "labels": torch.stack([it["labels"] for it in items]),
                "position_ids": torch.stack([it["position_ids"] for it in items]),
                "attention_mask": (same & causal)[:, None]}  # (B, 1, T, T), True = may attend

    def fill_rate(self) -> float:
        """Share of row tokens that are real (not padding)."""
        real = sum(min(len(r.input_ids), self.seq_len) for row in self.rows for r in row)
        return real / max(1, len(self.rows) * self.seq_len)


# ----------------------------------------------------------------------------- one SFT run
@dataclass
class SFTResult:
    model: object          # the fine-tuned model (a peft model when LoRA was used)
    tokenizer: object
    history: History
    info: dict             # JSON-ready figures: before/after metrics, time, sizes
    path: Path | None      # where the model (or the LoRA adapter) was saved


def retained_knowledge(model, tok, val_rows: TokenRows, world) -> dict:
    """What pre-training taught, measured: perplexity on its validation text and the capital cloze."""
    return {"ppl": perplexity(model, val_rows, max_rows=64)["perplexity"],
            "cloze": fact_cloze(model, tok, world)["accuracy"]}


def finetune(profile: Profile, *, lora: bool | None = None, base=None, examples: list[dict] | None = None,
             callbacks: Sequence = (), stop=None, pause=None, out_dir: str | Path | None = None,
             measure: bool = True, run=None) -> SFTResult:
    """Fine-tune the profile's base model on chat examples and measure before and after.

    Args:
        profile: its `sft` settings are used (`profile.with_sft(...)` changes them).
        lora: overrides `profile.sft.lora`.
        base: a `kit.artifacts.BaseModel` (default: `base_model(profile)`, built if missing).
        examples: training examples (default: the generated ones about the "qa" countries).
        callbacks, stop, pause: passed to `train()`.
        out_dir: where to save the model (LoRA: only the adapter); default: no save.
        measure: compute held-out QA, format rate, perplexity and cloze before/after.
        run: a `kit.runs.Run` that records this run (a sweep passes its own); by default a new run
            folder `sft-<profile>-<full|lora>-<time>` under the cache's `runs/`, marked crashed on error.
    """
    from .runs import Run, auto_name

    own = run is None
    cfg_name = "lora" if (profile.sft.lora if lora is None else lora) else "full"
    run = run if run is not None else Run(auto_name(f"sft-{profile.name}-{cfg_name}"))
    try:
        result = _finetune(profile, lora, base, examples, [*callbacks, run], stop, pause, out_dir, measure, run)
    except BaseException as e:
        if own:
            run.finish("crashed", f"{type(e).__name__}: {e}")
        raise
    if own:
        run.finish()
    return result


def _finetune(profile, lora, base, examples, callbacks, stop, pause, out_dir, measure, run) -> SFTResult:
    from .artifacts import base_model

    cfg = profile.sft if lora is None else dataclasses.replace(profile.sft, lora=lora)
    base = base or base_model(profile)
    tok, model = base.tokenizer, base.fresh_model()
    world = load_world()
    splits = chat_splits(world, cfg.per_fact, cfg.seed)  # train: the "qa" countries; eval: the held-out ones
    train_examples = examples if examples is not None else splits["train"]
    heldout = split_countries(world)["heldout"]
    run.log(config={"profile": profile.name, **{f"sft.{k}": v for k, v in dataclasses.asdict(cfg).items()}},
            datasets={"train": train_examples, "eval": splits["eval"]})
    corpus = build_corpus(profile.corpus, world)  # pre-training text: for replay, and to measure forgetting
    replay = []
    if cfg.replay > 0:
        n = min(len(corpus.train), round(cfg.replay * len(train_examples)))
        replay = random.Random(cfg.seed).sample(corpus.train, n)
    rows = PackedChat.from_examples(train_examples, tok, cfg.seq_len, cfg.seed, replay_docs=replay)
    val_rows = PackedChat.from_examples(splits["eval"], tok, cfg.seq_len, cfg.seed)
    pretrain_val = TokenRows(encode_documents(tok, corpus.val), profile.pretrain.seq_len)
    before = retained_knowledge(model, tok, pretrain_val, world) if measure else {}
    if cfg.lora:
        torch.manual_seed(cfg.seed)  # the adapters' random initialisation, repeatable
        model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    tcfg = cfg.train_config(len(rows), profile.pretrain.device)
    for cb in callbacks:  # views that sample answers while training (the control panel) need the model
        if hasattr(cb, "on_model"):
            cb.on_model(model, tok)
    t0 = time.perf_counter()
    hist = train(model, rows, tcfg, val_data=val_rows, callbacks=callbacks, stop=stop, pause=pause)
    info = {
        "profile": profile.name, "lora": cfg.lora, "epochs": cfg.epochs, "lr": tcfg.lr, "steps": tcfg.max_steps,
        "stopped": hist.stopped, "train_examples": len(train_examples), "replay_docs": len(replay),
        "dropped_examples": len(rows.dropped),
        "packed_rows": len(rows), "fill_rate": round(rows.fill_rate(), 3),
        "trainable_params": count_params(model, trainable_only=True), "params": count_params(model),
        "train_seconds": round(hist.seconds, 2),
        "train_loss": hist.losses[-1] if hist.losses else None,
        "val_loss": hist.val_losses[-1] if hist.val_losses else None,
        "history": hist.to_dict(), "config": dataclasses.asdict(cfg),
    }
    if measure and not hist.stopped:  # a stopped run is saved at once, not measured
        qa = qa_eval(model, tok, qa_items(world, heldout))
        after = retained_knowledge(model, tok, pretrain_val, world)
        info.update(heldout_qa_accuracy=qa["accuracy"], heldout_qa_by_fact=qa["by_fact"], format_rate=qa["format_rate"],
                    qa_examples=qa["rows"][:12], ppl_before=before["ppl"], ppl_after=after["ppl"],
                    cloze_before=before["cloze"], cloze_after=after["cloze"])
    info["seconds"] = round(time.perf_counter() - t0, 2)
    path = None
    if out_dir is not None:
        path = Path(out_dir)
        model.save_pretrained(path / "model")
        tok.save_pretrained(path / "model")
        (path / "info.json").write_text(json.dumps(info, indent=1, default=str))
        run.info["checkpoint"] = str(path / "model")
    run.log_results({k: v for k, v in info.items() if k not in ("history", "config", "qa_examples")})
    if "qa_examples" in info:
        run.log_samples(info["qa_examples"])
    return SFTResult(model, tok, hist, info, path)


class EpochProbe:
    """A training callback: held-out QA accuracy and capital cloze at every validation pass (each epoch)."""

    def __init__(self, items, world, total_epochs: float):
        self.items, self.world, self.total_epochs = items, world, total_epochs
        self.epochs, self.heldout, self.cloze = [], [], []
        self.model = self.tok = None
        self.steps_per_epoch = 1.0

    def on_model(self, model, tok) -> None:
        self.model, self.tok = model, tok

    def on_step(self, ev: dict) -> None:
        self.steps_per_epoch = ev["max_steps"] / self.total_epochs

    def on_eval(self, ev: dict) -> None:
        self.epochs.append(round(ev["step"] / self.steps_per_epoch, 2))
        self.heldout.append(qa_eval(self.model, self.tok, self.items)["accuracy"])
        self.cloze.append(fact_cloze(self.model, self.tok, self.world)["accuracy"])


def accuracy_by_epoch(profile: Profile, epochs: float, *, lora: bool = False, n_items: int = 120,
                      base=None) -> dict:
    """Fine-tune for `epochs` and probe after every epoch: does longer training keep helping?

    Returns {"epochs": [...], "heldout_qa": [...], "cloze": [...]} (epoch 0 = the base model).
    """
    from .artifacts import base_model

    world = load_world()
    items = qa_items(world, split_countries(world)["heldout"])[:n_items]
    base = base or base_model(profile)
    cfg = profile.with_sft(epochs=epochs, lora=lora, eval_every=0)  # validation (and the probe) once per epoch
    probe = EpochProbe(items, world, epochs)
    start = base.fresh_model()
    first = {"heldout": qa_eval(start, base.tokenizer, items)["accuracy"],
             "cloze": fact_cloze(start, base.tokenizer, world)["accuracy"]}
    finetune(cfg, base=base, callbacks=[probe], measure=False)
    return {"epochs": [0.0, *probe.epochs], "heldout_qa": [first["heldout"], *probe.heldout],
            "cloze": [first["cloze"], *probe.cloze]}


TABLE_KEYS = ("heldout_qa_accuracy", "format_rate", "cloze_before", "cloze_after", "ppl_before", "ppl_after",
              "trainable_params", "train_seconds")


def results_table(runs: dict[str, SFTResult], keys: Sequence[str] = TABLE_KEYS) -> str:
    """A plain-text table of runs' figures, one column per run ("-" where a run has no such figure)."""
    def cell(v) -> str:
        if isinstance(v, bool) or v is None:
            return f"{'-' if v is None else v!s:>14}"
        return f"{v:>14,.3f}" if isinstance(v, float) else f"{v:>14,}"

    lines = [f"{'':22}" + "".join(f"{name:>14}" for name in runs)]
    lines += [f"{k:22}" + "".join(cell(r.info.get(k)) for r in runs.values()) for k in keys]
    return "\n".join(lines)
