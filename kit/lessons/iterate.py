"""Notebook 05's rounds: a sweep of fine-tuning runs, an error analysis and a data round, a feedback round.

The pieces (each recorded as a run by `kit.engine.runs`, so every round can be compared with the others):
  * `sft_run_fn(profile)`: the `run_fn` of `kit.engine.runs.sweep` — one fine-tuning run per point of the grid;
  * `error_analysis(rows)`: the evaluation questions a run gets wrong, grouped by fact type, continent
    and question wording; `targeted_examples(...)` writes extra training examples for the weakest group;
  * `feedback_items(...)`: two sampled answers per question, for a rater (`kit.widgets.rating`) or the
    scripted reviewer; the chosen/rejected pairs go to a DPO round (`kit.engine.dpo.dpo`).

Example:
    >>> runs = sweep(grid(parse_grid("lr=3e-4,1e-3")), sft_run_fn(profile), name="lr")   # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from ..engine.config import ConfigError
from ..engine.generate import answers
from ..world.corpus import ANSWERS, CHAT_QUESTIONS, QAItem, load_world, qa_items, split_countries
from ..world.probes import contains_fact
from .profiles import Profile

RESULT_KEYS = ("heldout_qa_accuracy", "heldout_qa_by_fact", "format_rate", "cloze_after", "ppl_after", "train_loss",
               "val_loss",
               "train_seconds", "stopped")


def sft_run_fn(profile: Profile, save_model: bool = True, base=None,
               examples: list[dict] | None = None) -> Callable:
    """`run_fn(params, run) -> results` for `kit.engine.runs.sweep`: `finetune_recipe(profile.with_sft(**params))`.

    The model (or LoRA adapter) is saved in the run's folder, `<run>/model`, when `save_model` is set.
    """
    from .artifacts import base_model
    from .sft import finetune_recipe

    def run_fn(params: dict, run) -> dict:
        prof = profile.with_sft(**sft_changes(profile, params))
        result = finetune_recipe(prof, base or base_model(profile), examples=examples, callbacks=[], stop=run.stop,
                                 run=run, out_dir=run.folder if save_model else None)
        return {k: result.info[k] for k in RESULT_KEYS if k in result.info}
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
                   root=None, before: dict | None = None) -> tuple[object, dict]:
    """A DPO round on the collected preference pairs, recorded as a run; held-out QA before and after."""
    from ..engine.dpo import dpo
    from ..engine.models import merge_lora
    from ..engine.runs import Run
    from ..world.probes import qa_eval

    world = load_world()
    items = qa_items(world, split_countries(world)["heldout"])
    before = before or {"heldout_qa_accuracy": qa_eval(model, tok, items)["accuracy"]}
    with Run(name, config={"profile": profile.name, **profile.safety.__dict__}, datasets={"pairs": pairs},
             root=root) as run:
        policy, _ = dpo(model, tok, pairs, profile.safety.dpo_config(), max_len=profile.sft.seq_len,
                        device=profile.pretrain.device, callbacks=[run])
        policy = merge_lora(policy)
        qa = qa_eval(policy, tok, items)
        results = {"heldout_qa_accuracy": qa["accuracy"], "format_rate": qa["format_rate"], "pairs": len(pairs),
                   "heldout_qa_accuracy_before": before["heldout_qa_accuracy"]}
        run.log_results(results)
        run.log_samples(qa["rows"][:12])
    return policy, results


def best_run(runs: list[dict], key: str = "heldout_qa_accuracy") -> dict:
    """The finished run with the highest `key` (ties: the earlier one)."""
    done = [r for r in runs if r.get("status") == "finished" and r["results"].get(key) is not None]
    if not done:
        raise ValueError(f"no finished run has a {key!r} result")
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


def error_analysis(items: list[QAItem], answers: list[str], world=None) -> dict:
    """Wrong answers grouped three ways: by fact type, by continent and by question wording.

    Returns {"wrong": [(item, answer)], "by_fact" | "by_continent" | "by_wording": {group: (wrong, total)}}.
    """
    world = world or load_world()
    out: dict = {"wrong": [], "by_fact": {}, "by_continent": {}, "by_wording": {}}
    for it, a in zip(items, answers):
        ok = contains_fact(a, it.expected)
        if not ok:
            out["wrong"].append((it, a))
        for key, group in (("by_fact", it.fact), ("by_continent", world[it.country].continent),
                           ("by_wording", question_template(it))):
            w, n = out[key].get(group, (0, 0))
            out[key][group] = (w + (not ok), n + 1)
    for key in ("by_fact", "by_continent", "by_wording"):  # worst group first
        out[key] = dict(sorted(out[key].items(), key=lambda kv: -kv[1][0] / kv[1][1]))
    return out


def ask(model, tok, items: list[QAItem], max_new_tokens: int = 40) -> list[str]:
    """Greedy answers of `model` to the questions of `items`."""
    return answers(model, tok, [it.question for it in items], max_new_tokens)


def targeted_examples(fact: str, n_per_country: int = 2, seed: int = 1) -> list[dict]:
    """Extra training examples about one fact type, for the "qa" (training) countries only — never the
    evaluation countries — in every question wording the kit has for that fact."""
    world = load_world()
    rng = random.Random(seed)
    out = []
    for name in split_countries(world)["qa"]:
        c = world[name]
        for q in rng.sample(CHAT_QUESTIONS[fact], min(n_per_country, len(CHAT_QUESTIONS[fact]))):
            out.append({"messages": [{"role": "user", "content": q.format(name=name)},
                                     {"role": "assistant", "content": ANSWERS[fact].format(**c.__dict__)}]})
    return out


def data_round(profile: Profile, best: dict, fact: str, *, base=None, root=None, n_per_country: int = 2) -> list[dict]:
    """Train again with the best run's sweep settings on the chat data plus targeted examples for `fact`.

    The run is named after the fact and the number of extra examples, so a changed round is not mistaken
    for a finished one. Returns the sweep result (one run).
    """
    from ..engine.runs import sweep
    from ..world.corpus import chat_splits

    extra = targeted_examples(fact, n_per_country)
    examples = chat_splits(per_fact=profile.sft.per_fact, seed=profile.sft.seed)["train"] + extra
    params = best["params"]  # the best run's sweep point
    return sweep([params], sft_run_fn(profile, base=base, examples=examples), name=f"data-{fact}-{len(extra)}",
                 root=root, progress=False)


def feedback_items(model, tok, n: int = 120, temperature: float = 1.0, seed: int = 0,
                   max_new_tokens: int = 40) -> list[tuple[str, str, str, str]]:
    """(prompt, answer 1, answer 2, expected fact): two sampled answers to questions about the TRAINING
    countries (the held-out ones stay for evaluation), where the two answers differ."""
    import torch

    from ..engine.generate import _generate

    world = load_world()
    items = qa_items(world, split_countries(world)["qa"], per_fact=1, seed=seed + 11)
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

