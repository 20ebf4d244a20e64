"""Notebook 05's rounds: a sweep of fine-tuning runs, an error analysis and a data round, a feedback round.

The pieces (each recorded as a run by `kit.engine.runs`, so every round can be compared with the others):
  * `sft_run_fn(profile)`: the `run_fn` of `kit.engine.sweeps.sweep` — one fine-tuning run per point of the grid;
  * `error_analysis(items, replies)`: the dev questions a run gets wrong, grouped by fact type, continent
    and question wording; `targeted_examples(...)` writes extra training examples for the weakest group;
  * `feedback_items(...)`: two sampled answers per question, for a rater (`kit.widgets.rating`) or the
    scripted reviewer; the chosen/rejected pairs go to a DPO round (`kit.engine.dpo.dpo`);
  * `report_on_test(...)`: the test countries, measured once, at the very end.
Every choice here (best run, error analysis, the data round, the feedback round's before/after) reads the
dev countries only; the functions refuse test questions (`TestSplitError`), so a choice cannot peek.

Example:
    >>> runs = sweep(grid(parse_grid("lr=3e-4,1e-3")), sft_run_fn(profile), name="lr")   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path

from ..engine.config import ConfigError
from ..engine.errors import KitError
from ..engine.generate import chat_replies
from ..world.chats import CHAT_QUESTIONS, QAItem, qa_items, split_items
from ..world.corpus import ANSWERS, country_splits, load_world
from ..world.probes import strict_correct
from .profiles import Profile
from .results import SFT, TEST_QA

RESULT_KEYS = SFT.names("sweep")  # what a sweep run records (`kit.lessons.results`)


class TestSplitError(KitError, ValueError):
    """Selection code was handed test questions or a test figure: choose on dev, report test once."""


def sft_run_fn(profile: Profile, save_model: bool = True, base=None,
               examples: list[dict] | None = None, parent: str | None = None, measure: bool = True) -> Callable:
    """`run_fn(params, run) -> results` for `kit.engine.sweeps.sweep`: `finetune_recipe(profile.with_sft(**params))`.

    The model (or LoRA adapter) is saved in the run's folder, `<run>/model`, when `save_model` is set.
    `run_fn.describe(params)` gives the sweep what makes a run reusable: the whole profile with the point's
    changes, the base model, and a fingerprint of the training data. `parent`: what the runs record as their
    parent (default: the base model they start from). `measure=False` skips the measurements (no results to
    choose by: for quick checks only).
    """
    from .artifacts import base_entry, base_model
    from .recipe import EVAL_SPLIT, base_name, finetune_recipe

    def run_fn(params: dict, run) -> dict:
        prof = profile.with_sft(**sft_changes(profile, params))
        result = finetune_recipe(prof, base or base_model(profile), examples=examples, callbacks=[], stop=run.stop,
                                 run=run, out_dir=run.folder if save_model else None, measure=measure)
        return SFT.flat(result.figures, "sweep")

    def describe(params: dict) -> dict:
        import dataclasses

        from ..engine.runs import fingerprint
        from ..world.chats import chat_splits

        prof = profile.with_sft(**sft_changes(profile, params))
        data = examples if examples is not None else \
            chat_splits(per_fact=prof.sft.per_fact, seed=prof.sft.seed)["train"]
        start = base_name(base) if base is not None else f"base model {base_entry(profile).name}"
        config = {k: dataclasses.asdict(getattr(prof, k)) for k in ("model", "tokenizer", "corpus", "pretrain", "sft")}
        return {"config": {**config, "profile": prof.name, "start": start, "eval_split": EVAL_SPLIT,
                           "save_model": save_model, "measure": measure},
                "data": fingerprint(data), "parent": parent or start}

    run_fn.describe = describe
    return run_fn


def sft_changes(profile: Profile, params: dict) -> dict:
    """Sweep parameters as `SFTConfig` changes: any `lora_*` field implies `lora=True` (unless `lora` is
    given), and `lr` sets `lora_lr` for a LoRA run. Unknown names are refused, all at once."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(profile.sft)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ConfigError(f"unknown fine-tuning field(s) {unknown} in the sweep; valid: {sorted(fields)}")
    out = dict(params)
    if "lora" not in out and any(k.startswith("lora_") for k in out):
        out["lora"] = True
    if out.get("lora", profile.sft.lora) and "lr" in out:
        out["lora_lr"] = out.pop("lr")
    return out


def feedback_round(model, tok, pairs: list[dict], profile: Profile, name: str = "feedback-dpo",
                   root=None, parent: dict | str | None = None) -> tuple[object, dict]:
    """A DPO round on the collected preference pairs, recorded as a run whose parent is the starting model's run;
    dev QA (strict and lenient) of the starting model and of the tuned one, with a paired interval of the change.

    `parent`: the run the starting model comes from (its name is recorded; its dev rows are reused as "before"
    when they are there).
    """
    from ..engine.dpo import dpo
    from ..engine.models import merge_lora
    from ..engine.runs import Run
    from ..world.probes import qa_eval
    from .recipe import EVAL_SPLIT, compare_runs, qa_figures

    items = split_items(EVAL_SPLIT)
    res = parent.get("results", {}) if isinstance(parent, dict) else {}
    before = res if SFT.name("qa.rows") in res else qa_figures(qa_eval(model, tok, items))
    parent_name = parent.get("name") if isinstance(parent, dict) else parent
    with Run(name, config={"profile": profile.name, **dataclasses.asdict(profile.feedback)}, datasets={"pairs": pairs},
             root=root, parent=parent_name) as run:
        policy, _ = dpo(model, tok, pairs, profile.feedback, max_len=profile.sft.seq_len,
                        device=profile.pretrain.device, callbacks=[run])
        policy = merge_lora(policy)
        qa = qa_eval(policy, tok, items)
        results = {**qa_figures(qa), "pairs": len(pairs), "heldout_split": EVAL_SPLIT,
                   f"{SFT.name('qa.strict')}_before": SFT.read(before, "qa.strict"),
                   f"{SFT.name('qa.lenient')}_before": SFT.read(before, "qa.lenient")}
        change = compare_runs(before, results)
        results.update(change_ci=list(change["ci"]), change_mcnemar_p=change["mcnemar_p"])
        run.log_results(results)
        run.log_samples(qa["rows"][:12])
    return policy, results


def best_run(runs: list[dict], key: str = SFT.name("qa.strict")) -> dict:
    """The finished run with the highest `key` (ties: the earlier one), a dev figure: a test figure is refused."""
    if key.startswith("test"):
        raise TestSplitError(f"best_run() chooses by {key!r}, a test figure: choose on dev ({SFT.name('qa.strict')}), "
                             "and measure the chosen run on test once, at the end")
    done = [r for r in runs if r.get("status") == "finished" and r["results"].get(key) is not None]
    if not done:
        raise ValueError(f"no finished run has a {key!r} result")
    for r in done:
        if r["results"].get("heldout_split", "dev") != "dev":
            raise TestSplitError(f"run {r['name']} was measured on {r['results']['heldout_split']!r}: choose on dev")
    return max(done, key=lambda r: r["results"][key])


def load_run_model(run: dict, base=None):
    """The model a run saved (`<run>/model`): a full model, or the base model plus the run's LoRA adapter."""
    from transformers import AutoModelForCausalLM

    folder = Path(run["folder"]) / "model"
    if (folder / "adapter_config.json").exists():
        if (folder / "merged").is_dir():  # `kit.engine.sft.save` writes the merged model beside the adapter
            return AutoModelForCausalLM.from_pretrained(folder / "merged")
        import warnings

        from peft import PeftModel

        from .artifacts import base_model
        base = base or base_model(run["config"].get("profile"))
        with warnings.catch_warnings():  # peft 0.21 calls a transformers API that transformers 5 marks deprecated
            warnings.simplefilter("ignore", FutureWarning)
            return PeftModel.from_pretrained(base.fresh_model(), folder).merge_and_unload()
    return AutoModelForCausalLM.from_pretrained(folder)


def question_template(item: QAItem) -> str:
    """The wording of a question with the country taken out ("What is the capital of {name}?")."""
    return item.question.replace(item.country, "{name}")


def check_not_test(items: list[QAItem], world=None, what: str = "this step") -> None:
    """Raise `TestSplitError` if any question is about a test country."""
    world = world or load_world()
    test = set(country_splits(world)["test"])
    leaked = sorted({it.country for it in items if it.country in test})
    if leaked:
        raise TestSplitError(f"{what} got {len(leaked)} test countries ({', '.join(leaked[:3])}, ...): choices are "
                             "made on dev (`split_items('dev')`); test is measured once, at the end (`report_on_test`)")


def error_analysis(items: list[QAItem], replies: list, world=None) -> dict:
    """Wrong answers (by the strict rule) grouped three ways: by fact type, by continent and by question wording.

    `replies`: (answer, ended) pairs from `ask`, or plain answers (taken as ended). Test questions are refused.
    Returns {"wrong": [(item, answer)], "by_fact" | "by_continent" | "by_wording": {group: (wrong, total)}}.
    """
    world = world or load_world()
    check_not_test(items, world, "error_analysis()")
    out: dict = {"wrong": [], "by_fact": {}, "by_continent": {}, "by_wording": {}}
    for it, r in zip(items, replies):
        a, ended = (r, True) if isinstance(r, str) else r
        ok = strict_correct(it, a, ended, world)
        if not ok:
            out["wrong"].append((it, a))
        for key, group in (("by_fact", it.fact), ("by_continent", world[it.country].continent),
                           ("by_wording", question_template(it))):
            w, n = out[key].get(group, (0, 0))
            out[key][group] = (w + (not ok), n + 1)
    for key in ("by_fact", "by_continent", "by_wording"):  # worst group first
        out[key] = dict(sorted(out[key].items(), key=lambda kv: -kv[1][0] / kv[1][1]))
    return out


def ask(model, tok, items: list[QAItem], max_new_tokens: int = 40) -> list[tuple[str, bool]]:
    """Greedy replies of `model` to the questions of `items`: (answer, ended its turn) pairs."""
    return chat_replies(model, tok, [[{"role": "user", "content": it.question}] for it in items],
                        max_new_tokens=max_new_tokens)


def targeted_examples(fact: str | None = None, n_per_country: int = 2, seed: int = 1, *,
                      continent: str | None = None) -> list[dict]:
    """Extra training examples for the "train" countries only — never the evaluation countries: about one fact
    type (in every question wording the kit has for it), or about every fact of the countries of one continent."""
    if (fact is None) == (continent is None):
        raise ValueError("give either fact= (a fact type) or continent= (a continent), not both")
    world = load_world()
    rng = random.Random(seed)
    names = [n for n in country_splits(world)["train"] if continent is None or world[n].continent == continent]
    if not names:
        raise ValueError(f"no training country lies in {continent!r}; continents: "
                         f"{sorted({c.continent for c in world.values()})}")
    out = []
    for name in names:
        c = world[name]
        for f in [fact] if fact else list(CHAT_QUESTIONS):
            for q in rng.sample(CHAT_QUESTIONS[f], min(n_per_country, len(CHAT_QUESTIONS[f]))):
                out.append({"messages": [{"role": "user", "content": q.format(name=name)},
                                         {"role": "assistant", "content": ANSWERS[f].format(**c.__dict__)}]})
    return out


def data_round(profile: Profile, best: dict, fact: str | None = None, *, continent: str | None = None, base=None,
               root=None, n_per_country: int = 2) -> list[dict]:
    """Train again with the best run's sweep settings on the chat data plus targeted examples for `fact` (or for
    the training countries of `continent`), from the same base model. The run records the best run as the one
    whose settings it took as its parent (the weights start again from the base model).

    The run is named after the target and the number of extra examples, and is reused only when its whole
    configuration and data are unchanged. Returns the sweep result (one run).
    """
    from ..engine.sweeps import sweep
    from ..world.chats import chat_splits

    extra = targeted_examples(fact, n_per_country, continent=continent)
    examples = chat_splits(per_fact=profile.sft.per_fact, seed=profile.sft.seed)["train"] + extra
    params = best["params"]  # the best run's sweep point
    target = (fact or continent).replace(" ", "_")
    run_fn = sft_run_fn(profile, base=base, examples=examples, parent=f"run {best['name']} (its settings; "
                                                                       "trained again from the base model)")
    return sweep([params], run_fn, name=f"data-{target}-{len(extra)}", root=root, progress=False)


def feedback_items(model, tok, n: int = 120, temperature: float = 1.0, seed: int = 0,
                   max_new_tokens: int = 40) -> list[tuple[str, str, str, str]]:
    """(prompt, answer 1, answer 2, expected fact): two sampled answers to questions about the TRAINING
    countries (the held-out ones stay for evaluation), where the two answers differ."""
    import torch

    from ..engine.generate import _generate

    world = load_world()
    items = qa_items(world, country_splits(world)["train"], per_fact=1, seed=seed + 11)
    items = random.Random(seed).sample(items, min(n, len(items)))
    texts = [tok.apply_chat_template([{"role": "user", "content": it.question}], tokenize=False,
                                     add_generation_prompt=True) for it in items]
    torch.manual_seed(seed)
    answers = []
    for _ in range(2):
        rows = _generate(model, tok, texts, 64, max_new_tokens=max_new_tokens, do_sample=True,
                         temperature=temperature, top_k=None, top_p=None)
        answers.append([tok.decode(r, skip_special_tokens=True).strip() for r in rows])
    return [(it.question, a, b, it.expected) for it, a, b in zip(items, *answers) if a != b]



def report_on_test(models: dict, tok, reference: str | None = None) -> dict:
    """The test countries, measured once, at the end: strict (with its 95% interval) and lenient QA of each model,
    the majority baseline, and each model's paired change against `reference` (one of the names).

    Call it once, after every choice is made: a test figure that feeds a choice is no longer a test figure.
    Returns {"rows": {name: figures}, "changes": {name: paired bootstrap vs reference}, "majority_baseline_strict"}.
    """
    from ..world.probes import majority_baseline, qa_eval
    from .recipe import compare_runs, qa_score

    items = split_items("test")
    rows = {name: TEST_QA.flat({"qa": qa_score(qa_eval(model, tok, items))}) for name, model in models.items()}
    changes = {name: compare_runs(rows[reference], r, TEST_QA) for name, r in rows.items()
               if reference is not None and name != reference}
    return {"rows": rows, "changes": changes, SFT.name("majority_strict"): majority_baseline(items)["accuracy"],
            "questions": len(items)}
