"""Supervised fine-tuning of any causal LM on any chat data: assistant-only loss, full or LoRA.

The examples are rendered and packed into rows (`kit.engine.packing`); only the assistant's
replies and their end-of-turn token carry loss. `finetune(model, tok, train, eval)` is the whole
run: pack, measure before, train, measure after, save. What it measures is generic
(`kit.engine.evaluation`); a recipe adds its own evaluators.

Example:
    >>> model, tok = load("my-model-folder")                                  # doctest: +SKIP
    >>> result = finetune(model, tok, train, eval, SFTConfig(lora=True))       # doctest: +SKIP
    >>> result.info["eval_loss_before"], result.info["eval_loss_after"]       # doctest: +SKIP
    (3.91, 1.27)
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .callbacks import emit, message
from .card import data_fingerprint
from .config import SFTConfig, problems_sft, raise_problems
from .evaluation import evaluate_chat
from .losses import KindLoss
from .models import add_lora, count_params, merge_lora
from .packing import PackedChat
from .shapes import to_kit_form
from .stats import paired_bootstrap
from .tokenizer import prepare
from .train import History, train


# ----------------------------------------------------------------------------- one run
@dataclass
class FinetuneResult:
    model: object          # the fine-tuned model (a peft model when LoRA was used)
    tokenizer: object
    history: History
    info: dict             # JSON-ready figures: before/after measurements, time, sizes
    path: Path | None      # where the model (LoRA: the adapter) was saved
    samples: list = dataclasses.field(default_factory=list)  # replies before and after, side by side
    figures: object = None  # a recipe's typed figures (e.g. `kit.lessons.results.RecipeFigures`), if it adds any


Evaluator = Callable[[object, object, str], dict]  # (model, tokenizer, "before" | "after") -> figures


def finetune(model, tok, train_examples: list[dict], eval_examples: list[dict] | None = None,
             config: SFTConfig | None = None, *, replay_docs: Sequence[str] = (), focus_examples: Sequence[dict] = (),
             evaluators: Mapping[str, Evaluator] | None = None, generate: bool = True, n_samples: int = 8,
             callbacks: Sequence = (), stop=None, pause=None, out_dir: str | Path | None = None, run=None,
             measure: bool = True, device: str = "auto") -> FinetuneResult:
    """Fine-tune `model` on chat examples and measure it before and after.

    Over 60 lines on purpose: it is the whole run in order (pack, measure, adapters, train, measure, save),
    each step a call; most of its length is this docstring.

    Args:
        model, tok: any causal LM and its tokenizer (`kit.load(folder | hub id)`); a missing pad
            token becomes the EOS token.
        train_examples, eval_examples: chat examples (`{"messages": [...]}`, or any shape of `kit.engine.shapes`).
        config: the SFTConfig (default `SFTConfig()`); replay_docs: plain documents mixed in (against forgetting).
        focus_examples: more training chats whose first reply token weighs `config.first_token_weight` (where a
            reply decides to help or refuse); without them the weight applies to every chat.
        evaluators: `{name: fn(model, tok, stage)}` run before and after; their figures go into
            `info[name + "_before"]` / `info[name + "_after"]` (or `info[name]` for figures they return flat).
        generate: also measure greedy replies on the eval split (exact match, token F1, ROUGE-L). callbacks,
            stop, pause: passed to `train()`; a callback with `on_model(model, tok)` gets the model.
        out_dir: save there (full: the model; LoRA: the adapter, and the merged model in `merged/`).
        run: a `kit.engine.runs.Run` that records config, data fingerprints and results; measure=False: no
            before/after measurement.

    Raises:
        ValueError: no training example carries a loss token (the data or the template).
    """
    config = config or SFTConfig()
    raise_problems(problems_sft(config))
    callbacks = [*callbacks, run] if run is not None else list(callbacks)  # the run records the curve
    train_examples, eval_examples = to_kit_form(train_examples), eval_examples and to_kit_form(eval_examples)
    tok = prepare(tok, note=lambda m: message(callbacks, m))
    rows, val_rows, config = _pack(train_examples, eval_examples, tok, config, replay_docs, focus_examples, callbacks)
    if run is not None:
        run.log(config={f"sft.{k}": v for k, v in dataclasses.asdict(config).items()},
                datasets={"train": train_examples, **({"eval": eval_examples} if eval_examples else {})})
    evaluators = dict(evaluators or {})
    info: dict = _provenance(model, [*train_examples, *focus_examples])  # for the model card
    before = evaluate_chat(model, tok, eval_examples, config.seq_len, generate=generate) if measure else {}
    for name, fn in evaluators.items() if measure else ():
        info[f"{name}_before"] = fn(model, tok, "before")
    if config.lora:
        torch.manual_seed(config.seed)  # the adapters' random initialisation, repeatable
        model = add_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_targets,
                         config.lora_layers)
    tcfg = config.train_config(len(rows), device)
    emit(callbacks, "on_model", model, tok)  # views that sample answers while training (the panel) need the model
    t0 = time.perf_counter()
    hist = train(model, rows, tcfg, objective=KindLoss(), val_data=val_rows, callbacks=callbacks, stop=stop,
                 pause=pause)
    info.update(_training_figures(hist, rows, config, tcfg.lr, tcfg.max_steps, model))
    info.update(train_examples=len(train_examples) + len(focus_examples), focus_examples=len(focus_examples),
                eval_examples=len(eval_examples or []), replay_docs=len(replay_docs))
    samples: list = []
    if measure and not hist.stopped:  # a stopped run is saved at once, not measured
        after = evaluate_chat(model, tok, eval_examples, config.seq_len, generate=generate)
        info.update(_changes(before, after))
        for name, fn in evaluators.items():
            info[f"{name}_after"] = fn(model, tok, "after")
        samples = [{"prompt": p, "reference": ref, "before": b, "after": a} for p, ref, b, a in
                   zip(after.get("prompts", []), after.get("references", []), before.get("replies", []),
                       after.get("replies", []))][:n_samples]
    info["seconds"] = round(time.perf_counter() - t0, 2)
    path = save(model, tok, out_dir, info) if out_dir is not None else None
    if path is not None and run is not None:
        run.info["checkpoint"] = str(path)
    if run is not None:
        run.log_results({k: v for k, v in info.items() if k not in ("history", "config")})
        if samples:
            run.log_samples([{"prompt": s["prompt"], "answer": s["after"], "expected": s["reference"]}
                             for s in samples])
    return FinetuneResult(model, tok, hist, info, path, samples)


def _pack(train_examples, eval_examples, tok, config: SFTConfig, replay_docs, focus_examples, callbacks):
    """(the packed training rows, the packed evaluation rows or None, the config): a dataset that packs into
    fewer rows than a batch gets a smaller batch; one with no loss token at all is refused."""
    rows = PackedChat.from_examples(train_examples, tok, config.seq_len, config.seed, replay_docs=replay_docs,
                                    first_token_weight=config.first_token_weight, focus_examples=focus_examples)
    if 0 < len(rows) < config.batch_size:
        message(callbacks, f"note: the data packs into {len(rows)} rows of {config.seq_len} tokens, fewer than "
                           f"batch_size={config.batch_size}: using batch_size={len(rows)}")
        config = dataclasses.replace(config, batch_size=len(rows))
    if not rows.loss_tokens():
        raise ValueError(f"none of the {len(train_examples)} training examples has a token that carries loss "
                         "(every reply has weight 0, was cut off by seq_len, or the data is empty): check the "
                         "data with `python -m kit data validate FILE`")
    val_rows = PackedChat.from_examples(eval_examples, tok, config.seq_len, config.seed) if eval_examples else None
    return rows, val_rows, config


def _training_figures(hist: History, rows: PackedChat, config: SFTConfig, lr: float, planned: int, model) -> dict:
    """What the training did: steps, losses (chat and replay apart), sizes, time, the history and the config."""
    steps_done = hist.steps[-1] if hist.steps else 0
    last = lambda key: next((m[key] for m in reversed(hist.metrics) if m.get(key) is not None), None)  # noqa: E731
    return {
        "lora": config.lora, "epochs": config.epochs, "lr": lr, "steps": steps_done, "planned_steps": planned,
        "epochs_done": round(steps_done / max(1, len(rows) // config.batch_size), 3), "stopped": hist.stopped,
        "dropped_examples": len(rows.dropped), "loss_tokens": rows.loss_tokens(),
        "packed_rows": len(rows), "fill_rate": round(rows.fill_rate(), 3),
        "trainable_params": count_params(model, trainable_only=True), "params": count_params(model),
        "train_seconds": round(hist.seconds, 2),
        "train_loss": hist.losses[-1] if hist.losses else None,  # chat and replay tokens together
        "train_chat_loss": last("chat_loss"), "train_replay_loss": last("replay_loss"),
        "val_loss": hist.val_losses[-1] if hist.val_losses else None,  # chat tokens only: compare with train_chat_loss
        "history": hist.to_dict(), "config": dataclasses.asdict(config),
    }


def _changes(before: dict, after: dict) -> dict:
    """`evaluate_chat`'s figures before and after (`<key>_before`, `<key>_after`), and the paired change of exact
    match: [difference, 95% low, high]."""
    out = {}
    for key in ("eval_loss", "eval_perplexity", "exact_match", "token_f1", "rouge_l"):
        if key in before:
            out[f"{key}_before"], out[f"{key}_after"] = before[key], after[key]
    if "exact_rows" in before:
        change = paired_bootstrap(before["exact_rows"], after["exact_rows"])
        out["exact_match_change"] = [change["diff"], *change["ci"]]
    return out


def chat_loss_curve(history: History) -> tuple[list[int], list[float]]:
    """(steps, the assistant tokens' training loss) of a `finetune` run: the curve to set beside the validation
    loss (the plain `history.losses` mixes in the replay documents)."""
    points = [(m["step"], m["chat_loss"]) for m in history.metrics if m.get("chat_loss") is not None]
    return [s for s, _ in points], [v for _, v in points]


def _provenance(model, examples: list[dict]) -> dict:
    """Where a fine-tuned model came from: its base model and its training data's fingerprint."""
    return {"base_model": _base_name(model), "data_fingerprint": data_fingerprint(examples)}


def _base_name(model) -> str:
    """The hub id or folder the model was loaded from (the packaged model's name where the kit converted it)."""
    base = getattr(model, "base_model", model) if hasattr(model, "merge_and_unload") else model
    base = getattr(base, "model", base) if hasattr(model, "merge_and_unload") else base
    name = getattr(getattr(base, "config", None), "_name_or_path", "") or getattr(model, "name_or_path", "")
    if "models/smollm2" in str(name).replace("\\", "/"):
        return "HuggingFaceTB/SmolLM2-135M-Instruct"
    return str(name) or "unknown"


def save(model, tok, out_dir: str | Path, info: dict | None = None) -> Path:
    """Save a fine-tuned model where plain transformers / peft load it directly, with its tokenizer.

    Full fine-tuning: `AutoModelForCausalLM.from_pretrained(out_dir)`. LoRA: the adapter, for
    `peft.AutoPeftModelForCausalLM.from_pretrained(out_dir)`, and the merged model in
    `out_dir/merged` for `AutoModelForCausalLM`. The generation config stops at the end of a turn
    (`card.stop_generation_at_turn_end`). `info` (if given) goes to `out_dir/info.json`, and with it a
    model card, `out_dir/README.md` (`card.write_card`).
    """
    import copy

    from .card import stop_generation_at_turn_end, write_card

    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    stop_generation_at_turn_end(model, tok)  # plain `generate` stops at the end of a reply
    model.save_pretrained(path)
    tok.save_pretrained(path)
    if hasattr(model, "merge_and_unload"):  # a LoRA model: also a plain, merged copy
        merged = merge_lora(copy.deepcopy(model))
        stop_generation_at_turn_end(merged, tok)
        merged.save_pretrained(path / "merged")
        tok.save_pretrained(path / "merged")
    if info is not None:
        (path / "info.json").write_text(json.dumps(info, indent=1, default=str))
        write_card(path, {**info, "name": str(path)})
    return path
