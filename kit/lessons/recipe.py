"""The course's SFT recipe: the profile's base model, fine-tuned on chats about the "qa" countries.

It is one user of the engine's `finetune()`: the course adds its data (generated chats, replay
of pre-training documents against forgetting) and its measurements, plugged in as an evaluator
(held-out QA, format rate, the capital cloze, perplexity on pre-training text).

Example:
    >>> result = finetune_recipe(get_profile("smoke"), base_model("smoke"))   # doctest: +SKIP
    >>> result.info["heldout_qa_strict"], result.info["heldout_qa_strict_ci"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..engine.results import Contract
from ..engine.runs import Run, auto_name
from ..engine.sft import FinetuneResult, finetune
from ..engine.stats import bootstrap_ci, mcnemar, paired_bootstrap
from ..engine.tokenizer import encode_documents
from ..engine.train import TokenRows
from ..world.chats import chat_splits, mentioned_countries, split_items
from ..world.corpus import build_corpus, country_splits, load_world
from ..world.probes import cloze_on, fact_cloze, majority_baseline, qa_eval
from .profiles import Profile
from .results import SFT, BeforeAfter, Countries, QAScore, RecipeFigures

EVAL_SPLIT = "dev"  # every figure the notebooks choose by; "test" is measured once, at the end of notebook 05
SAVED_BY_NOTEBOOK_02 = ("curated.jsonl", "train.jsonl")  # in the order they are preferred


def course_examples(profile: Profile, folder: str | Path = "data") -> tuple[list[dict], str]:
    """The examples the course fine-tunes on, and one line that says which they are.

    Notebook 02's saved data when there is some: `folder/curated.jsonl` (examples you kept in its
    curation and saved), else `folder/train.jsonl` (its training set). A file is used when it loads
    with no error and holds at least one example; otherwise the line says why it was passed over.
    Without either, the generated examples about the "train" countries (`finetune_recipe`'s default).

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
        splits = country_splits(world)
        leaked = mentioned_countries(examples, splits["dev"] + splits["test"], world)
        if leaked:
            named = ", ".join(leaked[:3]) + (", ..." if len(leaked) > 3 else "")
            source += (f"; note: they name {len(leaked)} held-out (dev or test) countries ({named}), so the held-out "
                       "evaluation no longer measures only what pre-training taught about them")
        return [clean(ex) for ex in examples], "\n".join([*passed_over, source])
    examples = chat_splits(world, profile.sft.per_fact, profile.sft.seed)["train"]
    source = (f"generated: {len(examples)} examples about the \"train\" countries (no usable notebook 02 data in "
              f"{Path(folder)}/: run notebook 02 to save yours)")
    return examples, "\n".join([*passed_over, source])


def retained_knowledge(model, tok, val_rows: TokenRows, world) -> dict:
    """What pre-training taught, measured: {"ppl": perplexity on its validation text, "cloze": the capital cloze
    ({"all", "train", "heldout"}: every country, and apart the fine-tuned and the never fine-tuned (dev) ones)}."""
    from ..engine.metrics import perplexity

    cloze, splits = fact_cloze(model, tok, world), country_splits(world)
    by_group = {"all": cloze["accuracy"], "train": cloze_on(cloze, splits["train"]),
                "heldout": cloze_on(cloze, splits[EVAL_SPLIT])}  # JSON-ready: the engine records it as it is
    return {"ppl": perplexity(model, val_rows, max_rows=64)["perplexity"], "cloze": by_group}


def course_evaluator(profile: Profile, tok, world=None):
    """The course's measurements as an engine evaluator: before, the kept knowledge; after, also held-out QA."""
    world = world or load_world()
    corpus = build_corpus(profile.corpus, world)
    pretrain_val = TokenRows(encode_documents(tok, corpus.val), profile.pretrain.seq_len)
    items = split_items(EVAL_SPLIT, world)

    def evaluate(model, tok, stage: str) -> dict:
        out = retained_knowledge(model, tok, pretrain_val, world)
        if stage == "after":
            out.update(qa=qa_eval(model, tok, items))
        return out

    return evaluate


def base_qa(base, split: str = EVAL_SPLIT) -> dict:
    """The base model's QA figures on a split's questions (strict, lenient, per-question rows), measured once
    per base model and kept in the cache (`<cache>/measurements/`)."""
    import hashlib
    import json

    from ..engine.cache import cache_root, write_text_atomic

    items = split_items(split)
    digest = hashlib.sha256(json.dumps([it.question for it in items]).encode()).hexdigest()[:10]
    path = cache_root() / "measurements" / f"{Path(base.path).name}-qa-{split}-{digest}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    qa = {k: v for k, v in qa_eval(base.model, base.tokenizer, items).items() if k != "rows"}
    write_text_atomic(path, json.dumps(qa))
    return qa


def qa_score(qa: dict) -> QAScore:
    """A `qa_eval` result as a typed `QAScore`: strict (the headline) with its 95% interval (questions resampled by
    country), lenient, per fact type, and the per-question rows for paired comparisons."""
    return QAScore(strict=qa["strict"], ci=list(bootstrap_ci(qa["strict_rows"], qa["countries"])["ci"]),
                   lenient=qa["accuracy"], strict_by_fact=qa["strict_by_fact"], by_fact=qa["by_fact"],
                   rows=qa["strict_rows"], countries=qa["countries"], format_rate=qa["format_rate"])


def qa_figures(qa: dict) -> dict:
    """A `qa_eval` result as the flat, JSON-ready keys of a fine-tuning's held-out QA (`results.SFT`)."""
    return SFT.flat({"qa": qa_score(qa)})


def finetune_recipe(profile: Profile, base, *, lora: bool | None = None, examples: list[dict] | None = None,
                    callbacks: Sequence = (), stop=None, pause=None, out_dir: str | Path | None = None,
                    measure: bool = True, run=None) -> FinetuneResult:
    """Fine-tune the profile's base model on the course's chat examples and measure before and after.

    Args:
        profile: its `sft` settings are used (`profile.with_sft(...)` changes them).
        base: a `kit.lessons.artifacts.CachedModel` (`kit.base_model(profile)`).
        lora: overrides `profile.sft.lora`.
        examples: training examples (default: the generated ones about the "train" countries).
        callbacks, stop, pause: passed to `train()`.
        out_dir: where to save the model (LoRA: the adapter, and the merged model); default: no save.
        measure: compute held-out QA (strict and lenient, on the dev countries), the base model's and the
            majority baseline's scores on the same questions, format rate, perplexity and cloze before/after.
        run: a `kit.engine.runs.Run` that records this run (a sweep passes its own); by default a new run
            folder `sft-<profile>-<full|lora>-<time>` under the cache's `runs/`, marked crashed on error.
    """
    cfg = profile.sft if lora is None else dataclasses.replace(profile.sft, lora=lora)
    with _own_run(run, f"sft-{profile.name}-{'lora' if cfg.lora else 'full'}", base_name(base)) as run:
        world = load_world()
        train_examples, eval_examples, replay = recipe_data(profile, cfg, examples, world)
        run.log(config={"profile": profile.name})
        evaluators = {"course": course_evaluator(profile, base.tokenizer, world)} if measure else {}
        result = finetune(base.fresh_model(), base.tokenizer, train_examples, eval_examples, cfg, replay_docs=replay,
                          evaluators=evaluators, generate=False, callbacks=callbacks, stop=stop, pause=pause,
                          run=run, measure=measure, device=profile.pretrain.device)
        result.figures = _figures(profile, cfg, base, result, run.info.get("parent"), world)
        result.info.update(SFT.flat(result.figures))
        _record(run, result, out_dir)
    return result


@contextlib.contextmanager
def _own_run(run, name: str, parent: str):
    """The given run; or a new run folder (`auto_name(name)`), finished when the block ends (crashed, with the
    error, when it raises)."""
    if run is not None:
        yield run
        return
    with Run(auto_name(name), parent=parent) as own:
        yield own


def base_name(base) -> str:
    """How a run names the model it started from: the base model's cache entry."""
    return f"base model {Path(base.path).name}"


def recipe_data(profile: Profile, cfg, examples: list[dict] | None, world) -> tuple[list, list, list]:
    """(training examples (given, or the generated ones about the "train" countries), evaluation examples (the
    dev countries), replayed pre-training documents (`cfg.replay` of them per training example))."""
    splits = chat_splits(world, cfg.per_fact, cfg.seed)
    train_examples = examples if examples is not None else splits["train"]
    replay = []
    if cfg.replay > 0:
        corpus = build_corpus(profile.corpus, world)
        n = min(len(corpus.train), round(cfg.replay * len(train_examples)))
        replay = random.Random(cfg.seed).sample(corpus.train, n)
    return train_examples, splits["eval"], replay


def _figures(profile: Profile, cfg, base, result: FinetuneResult, parent: str | None, world) -> RecipeFigures:
    """The typed figures of a recipe run: the engine's, and the course evaluator's before and after."""
    before, after = result.info.pop("course_before", None), result.info.pop("course_after", None)
    fig = RecipeFigures(profile.name, cfg.seed, cfg.replay, EVAL_SPLIT, parent, result.info)
    if after is not None:
        fig.qa, fig.base = qa_score(after["qa"]), qa_score(base_qa(base))
        fig.majority_strict = majority_baseline(split_items(EVAL_SPLIT, world), world)["accuracy"]
        fig.ppl = BeforeAfter(before["ppl"], after["ppl"])
        fig.cloze = BeforeAfter(Countries(**before["cloze"]), Countries(**after["cloze"]))
        fig.examples = after["qa"]["rows"][:12]
    return fig


def _record(run, result: FinetuneResult, out_dir) -> None:
    """The measured figures and sample answers into the run's record; the model saved (with them) in `out_dir`."""
    if result.figures.qa is not None:
        run.log_results({k: v for k, v in result.info.items() if k not in ("history", "config", SFT.name("examples"))})
        run.log_samples(result.figures.examples)
    if out_dir is not None:
        from ..engine.sft import save

        result.path = save(result.model, result.tokenizer, Path(out_dir) / "model", result.info)
        run.info["checkpoint"] = str(result.path)
        run.log()


def same_settings(result: FinetuneResult, profile: Profile, lora: bool = False) -> bool:
    """True when `result` is a whole run (not stopped) with exactly the profile's fine-tuning settings (with
    `lora`): only then may it stand in for "the default run", e.g. a panel run whose settings were not changed."""
    want = dataclasses.asdict(dataclasses.replace(profile.sft, lora=lora))
    return not result.info.get("stopped") and result.info.get("config") == want


def seeds_run(profile: Profile, base, seeds: Sequence[int] = (0, 1, 2), *, lora: bool = False,
              done: dict | None = None, examples: list[dict] | None = None) -> dict:
    """The same configuration trained with several seeds (data order, phrasings, replay sample, LoRA init):
    how much of a difference between two runs could be the seed alone? `done`: {seed: result} already run;
    `examples`: the training examples (default: the generated ones, as in `finetune_recipe`).

    Returns {"results": {seed: FinetuneResult}, "strict": [...], "mean", "sd", "min", "max"}.
    """
    import statistics

    done = dict(done or {})
    for seed in seeds:
        if seed not in done:
            done[seed] = finetune_recipe(profile.with_sft(seed=seed, lora=lora), base, examples=examples)
    strict = [SFT.read(done[s].info, "qa.strict") for s in seeds]
    return {"results": {s: done[s] for s in seeds}, "strict": strict, "mean": statistics.mean(strict),
            "sd": statistics.stdev(strict) if len(strict) > 1 else 0.0, "min": min(strict), "max": max(strict)}


def compare_runs(a: FinetuneResult | dict, b: FinetuneResult | dict, contract: Contract = SFT) -> dict:
    """Paired bootstrap (by country) and McNemar test of b's strict QA rows against a's (the same questions).

    `a` or `b` may also be flat results of `contract` (e.g. a run's recorded results, or a final test's).
    """
    ia, ib = (x.info if isinstance(x, FinetuneResult) else x for x in (a, b))
    ra, rb = contract.read(ia, "qa.rows"), contract.read(ib, "qa.rows")
    out = paired_bootstrap(ra, rb, contract.read(ib, "qa.countries"))
    out["mcnemar_p"] = mcnemar(ra, rb)["p_value"]
    return out


def versus_base(result: FinetuneResult) -> dict:
    """`compare_runs` of the base model (a) against the fine-tuned model (b) on the same questions."""
    base = {SFT.name("qa.rows"): SFT.read(result.info, "base.rows"),
            SFT.name("qa.countries"): SFT.read(result.info, "qa.countries")}
    return compare_runs(base, result)


class EpochProbe:
    """A training callback: dev QA (strict and lenient), the capital cloze of the never fine-tuned countries and
    the perplexity on pre-training text at every validation pass (each epoch)."""

    def __init__(self, items, world, total_epochs: float, pretrain_val: TokenRows | None = None):
        self.items, self.world, self.total_epochs, self.pretrain_val = items, world, total_epochs, pretrain_val
        self.epochs, self.strict, self.lenient, self.cloze, self.ppl = [], [], [], [], []
        self.model = self.tok = None
        self.steps_per_epoch = 1.0

    def on_model(self, model, tok) -> None:
        self.model, self.tok = model, tok

    def on_step(self, ev: dict) -> None:
        self.steps_per_epoch = ev["max_steps"] / self.total_epochs

    def measure(self, model, tok) -> None:
        qa = qa_eval(model, tok, self.items)
        self.strict.append(qa["strict"])
        self.lenient.append(qa["accuracy"])
        self.cloze.append(cloze_on(fact_cloze(model, tok, self.world), country_splits(self.world)[EVAL_SPLIT]))
        if self.pretrain_val is not None:
            from ..engine.metrics import perplexity

            self.ppl.append(perplexity(model, self.pretrain_val, max_rows=64)["perplexity"])

    def on_eval(self, ev: dict) -> None:
        self.epochs.append(round(ev["step"] / self.steps_per_epoch, 2))
        self.measure(self.model, self.tok)


@dataclass
class EpochCurve:
    """`accuracy_by_epoch`'s curves, one value per epoch (epoch 0 = the base model)."""

    epochs: list[float]
    strict: list[float]          # dev QA, strict
    lenient: list[float]         # dev QA, lenient
    cloze_heldout: list[float]   # the capital cloze of the never fine-tuned (dev) countries
    ppl: list[float]             # perplexity on pre-training text

    def curves(self) -> dict[str, list[float]]:
        """The accuracy curves by name, for `kit.widgets.curves_figure`."""
        return {"dev QA (strict)": self.strict, "dev QA (lenient)": self.lenient,
                "fact probe, dev countries": self.cloze_heldout}

    def table(self) -> str:
        """One row per epoch, rates with 3 decimals."""
        head = f"{'epoch':>6}{'strict':>9}{'lenient':>9}{'fact probe':>12}{'perplexity':>12}"
        ppl = self.ppl or [None] * len(self.epochs)
        rows = [f"{e:>6g}{s:>9.3f}{le:>9.3f}{c:>12.3f}" + (f"{p:>12.3f}" if p is not None else f"{'-':>12}")
                for e, s, le, c, p in zip(self.epochs, self.strict, self.lenient, self.cloze_heldout, ppl)]
        return "\n".join([head, *rows])


def accuracy_by_epoch(profile: Profile, epochs: float, base, *, lora: bool = False, n_items: int | None = None,
                      examples: list[dict] | None = None) -> EpochCurve:
    """Fine-tune for `epochs` and probe after every epoch on the dev questions: does longer training keep helping?

    `examples`: the training examples (default: the generated ones, as in `finetune_recipe`).
    """
    world = load_world()
    items = split_items(EVAL_SPLIT, world)[:n_items]
    cfg = profile.with_sft(epochs=epochs, lora=lora, eval_every=0)  # validation (and the probe) once per epoch
    corpus = build_corpus(profile.corpus, world)
    val = TokenRows(encode_documents(base.tokenizer, corpus.val), profile.pretrain.seq_len)
    probe = EpochProbe(items, world, epochs, val)
    probe.measure(base.fresh_model(), base.tokenizer)
    finetune_recipe(cfg, base, callbacks=[probe], measure=False, examples=examples)
    return EpochCurve([0.0, *probe.epochs], probe.strict, probe.lenient, probe.cloze, probe.ppl)


TABLE_KEYS = SFT.names("table")


def results_table(runs: dict[str, FinetuneResult], keys: Sequence[str] = TABLE_KEYS) -> str:
    """A plain-text table of runs' figures, one column per run ("-" where a run has no such figure).

    The settings rows (steps, epochs, replay, lr, seed) say what each run did: compare runs only where
    they differ in the one thing you meant to change.
    """
    width = max(16, *(len(name) + 2 for name in runs))  # a column never runs into the next one

    def cell(v) -> str:
        if isinstance(v, (list, tuple)) and len(v) == 2:
            return f"{f'[{v[0]:.2f}, {v[1]:.2f}]':>{width}}"
        if isinstance(v, bool) or v is None:
            return f"{'-' if v is None else v!s:>{width}}"
        if isinstance(v, float):
            return f"{v:>{width}.2e}" if abs(v) < 1e-2 and v else f"{v:>{width},.3f}"
        return f"{v:>{width},}"

    lines = [f"{'':31}" + "".join(f"{name:>{width}}" for name in runs)]
    lines += [f"{k:31}" + "".join(cell(r.info.get(k)) for r in runs.values()) for k in keys]
    return "\n".join(lines)
