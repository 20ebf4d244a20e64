"""The course's SFT recipe: the profile's base model, fine-tuned on chats about the "qa" countries.

It is one user of the engine's `finetune()`: the course adds its data (generated chats, replay
of pre-training documents against forgetting) and its measurements, plugged in as an evaluator
(held-out QA, format rate, the capital cloze, perplexity on pre-training text).

Example:
    >>> result = finetune_recipe(get_profile("smoke"), base_model("smoke"))   # doctest: +SKIP
    >>> result.info["heldout_qa_accuracy"]                                    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path

from ..engine.runs import Run, auto_name
from ..engine.sft import FinetuneResult, finetune
from ..engine.tokenizer import encode_documents
from ..engine.train import TokenRows
from ..world.corpus import build_corpus, chat_splits, load_world, mentioned_countries, qa_items, split_countries
from ..world.probes import fact_cloze, qa_eval
from .profiles import Profile

SFTResult = FinetuneResult  # the recipe's result is the engine's
SAVED_BY_NOTEBOOK_02 = ("curated.jsonl", "train.jsonl")  # in the order they are preferred


def course_examples(profile: Profile, folder: str | Path = "data") -> tuple[list[dict], str]:
    """The examples the course fine-tunes on, and one line that says which they are.

    Notebook 02's saved data when there is some: `folder/curated.jsonl` (examples you kept in its
    curation and saved), else `folder/train.jsonl` (its training set). A file is used when it loads
    with no error and holds at least one example; otherwise the line says why it was passed over.
    Without either, the generated examples about the "qa" countries (`finetune_recipe`'s default).

    Example:
        >>> examples, source = course_examples(get_profile("smoke"), "notebooks/data")  # doctest: +SKIP
        >>> source                                                                      # doctest: +SKIP
        'notebooks/data/train.jsonl: 403 examples saved by notebook 02'
    """
    from ..engine.data import clean, load_jsonl

    passed_over = []
    world = load_world()
    for name in SAVED_BY_NOTEBOOK_02:
        path = Path(folder) / name
        if not path.is_file():
            continue
        examples, report = load_jsonl(path)
        if report.errors or not examples:
            first = f" (line {report.errors[0].line}: {report.errors[0].message})" if report.errors else ""
            passed_over.append(f"{path} passed over: {len(report.errors)} errors{first}, {len(examples)} usable "
                               "examples; fix it in notebook 02 or with `python -m kit data validate`")
            continue
        source = f"{path}: {len(examples)} examples saved by notebook 02"
        leaked = mentioned_countries(examples, split_countries(world)["heldout"], world)
        if leaked:
            named = ", ".join(leaked[:3]) + (", ..." if len(leaked) > 3 else "")
            source += (f"; note: they name {len(leaked)} held-out countries ({named}), so the held-out evaluation "
                       "no longer measures only what pre-training taught about them")
        return [clean(ex) for ex in examples], "\n".join([*passed_over, source])
    examples = chat_splits(world, profile.sft.per_fact, profile.sft.seed)["train"]
    source = (f"generated: {len(examples)} examples about the \"qa\" countries (no usable notebook 02 data in "
              f"{Path(folder)}/: run notebook 02 to save yours)")
    return examples, "\n".join([*passed_over, source])


def retained_knowledge(model, tok, val_rows: TokenRows, world) -> dict:
    """What pre-training taught, measured: perplexity on its validation text and the capital cloze."""
    from ..engine.metrics import perplexity

    return {"ppl": perplexity(model, val_rows, max_rows=64)["perplexity"],
            "cloze": fact_cloze(model, tok, world)["accuracy"]}


def course_evaluator(profile: Profile, tok, world=None):
    """The course's measurements as an engine evaluator: before, the kept knowledge; after, also held-out QA."""
    world = world or load_world()
    corpus = build_corpus(profile.corpus, world)
    pretrain_val = TokenRows(encode_documents(tok, corpus.val), profile.pretrain.seq_len)
    items = qa_items(world, split_countries(world)["heldout"])

    def evaluate(model, tok, stage: str) -> dict:
        out = retained_knowledge(model, tok, pretrain_val, world)
        if stage == "after":
            qa = qa_eval(model, tok, items)
            out.update(qa=qa)
        return out

    return evaluate


def finetune_recipe(profile: Profile, base, *, lora: bool | None = None, examples: list[dict] | None = None,
                    callbacks: Sequence = (), stop=None, pause=None, out_dir: str | Path | None = None,
                    measure: bool = True, run=None) -> FinetuneResult:
    """Fine-tune the profile's base model on the course's chat examples and measure before and after.

    Args:
        profile: its `sft` settings are used (`profile.with_sft(...)` changes them).
        base: a `kit.lessons.artifacts.BaseModel` (`kit.base_model(profile)`).
        lora: overrides `profile.sft.lora`.
        examples: training examples (default: the generated ones about the "qa" countries).
        callbacks, stop, pause: passed to `train()`.
        out_dir: where to save the model (LoRA: the adapter, and the merged model); default: no save.
        measure: compute held-out QA, format rate, perplexity and cloze before/after.
        run: a `kit.engine.runs.Run` that records this run (a sweep passes its own); by default a new run
            folder `sft-<profile>-<full|lora>-<time>` under the cache's `runs/`, marked crashed on error.
    """
    own = run is None
    cfg = profile.sft if lora is None else dataclasses.replace(profile.sft, lora=lora)
    run = run if run is not None else Run(auto_name(f"sft-{profile.name}-{'lora' if cfg.lora else 'full'}"))
    try:
        result = _recipe(profile, cfg, base, examples, callbacks, stop, pause, out_dir, measure, run)
    except BaseException as e:
        if own:
            run.finish("crashed", f"{type(e).__name__}: {e}")
        raise
    if own:
        run.finish()
    return result


def _recipe(profile, cfg, base, examples, callbacks, stop, pause, out_dir, measure, run) -> FinetuneResult:
    tok, model = base.tokenizer, base.fresh_model()
    world = load_world()
    splits = chat_splits(world, cfg.per_fact, cfg.seed)  # train: the "qa" countries; eval: the held-out ones
    train_examples = examples if examples is not None else splits["train"]
    run.log(config={"profile": profile.name})
    replay = []
    if cfg.replay > 0:
        corpus = build_corpus(profile.corpus, world)
        n = min(len(corpus.train), round(cfg.replay * len(train_examples)))
        replay = random.Random(cfg.seed).sample(corpus.train, n)
    evaluators = {"course": course_evaluator(profile, tok, world)} if measure else {}
    result = finetune(model, tok, train_examples, splits["eval"], cfg, replay_docs=replay, evaluators=evaluators,
                      generate=False, callbacks=callbacks, stop=stop, pause=pause, out_dir=None, run=run,
                      measure=measure, device=profile.pretrain.device)
    info = result.info
    info["profile"] = profile.name
    before, after = info.pop("course_before", None), info.pop("course_after", None)
    if after is not None:
        qa = after["qa"]
        info.update(heldout_qa_accuracy=qa["accuracy"], heldout_qa_by_fact=qa["by_fact"],
                    format_rate=qa["format_rate"], qa_examples=qa["rows"][:12], ppl_before=before["ppl"],
                    ppl_after=after["ppl"], cloze_before=before["cloze"], cloze_after=after["cloze"])
        run.log_results({k: v for k, v in info.items() if k not in ("history", "config", "qa_examples")})
        run.log_samples(info["qa_examples"])
    if out_dir is not None:
        from ..engine.sft import save

        result.path = save(result.model, tok, Path(out_dir) / "model", info)
        run.info["checkpoint"] = str(result.path)
        run.log()
    return result


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


def accuracy_by_epoch(profile: Profile, epochs: float, base, *, lora: bool = False, n_items: int = 120,
                      examples: list[dict] | None = None) -> dict:
    """Fine-tune for `epochs` and probe after every epoch: does longer training keep helping?

    `examples`: the training examples (default: the generated ones, as in `finetune_recipe`).

    Returns {"epochs": [...], "heldout_qa": [...], "cloze": [...]} (epoch 0 = the base model).
    """
    world = load_world()
    items = qa_items(world, split_countries(world)["heldout"])[:n_items]
    cfg = profile.with_sft(epochs=epochs, lora=lora, eval_every=0)  # validation (and the probe) once per epoch
    probe = EpochProbe(items, world, epochs)
    start = base.fresh_model()
    first = {"heldout": qa_eval(start, base.tokenizer, items)["accuracy"],
             "cloze": fact_cloze(start, base.tokenizer, world)["accuracy"]}
    finetune_recipe(cfg, base, callbacks=[probe], measure=False, examples=examples)
    return {"epochs": [0.0, *probe.epochs], "heldout_qa": [first["heldout"], *probe.heldout],
            "cloze": [first["cloze"], *probe.cloze]}


TABLE_KEYS = ("heldout_qa_accuracy", "format_rate", "cloze_before", "cloze_after", "ppl_before", "ppl_after",
              "trainable_params", "train_seconds")


def results_table(runs: dict[str, FinetuneResult], keys: Sequence[str] = TABLE_KEYS) -> str:
    """A plain-text table of runs' figures, one column per run ("-" where a run has no such figure)."""
    def cell(v) -> str:
        if isinstance(v, bool) or v is None:
            return f"{'-' if v is None else v!s:>14}"
        return f"{v:>14,.3f}" if isinstance(v, float) else f"{v:>14,}"

    lines = [f"{'':22}" + "".join(f"{name:>14}" for name in runs)]
    lines += [f"{k:22}" + "".join(cell(r.info.get(k)) for r in runs.values()) for k in keys]
    return "\n".join(lines)
