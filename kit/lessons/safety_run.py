"""Notebook 04's steps: measure safety, fix it three ways, and measure again on the same prompts.

Each stage is measured on the SAME evaluation prompts (phrasings never trained on):
  * refusal rate on harmful prompts (higher is safer) and over-refusal rate on safe look-alikes
    (lower is more helpful), each decided twice: by string matching and by the guard classifier;
  * held-out QA accuracy (notebook 03's question set): helpfulness kept.
Stages: `base` (pre-trained only), `sft` (notebook 03), `safety_sft` (SFT with refusal and
look-alike examples mixed in), `dpo` (preference tuning on top of safety_sft), `guarded` (the sft
model behind the guard as input and output filter: the guard as a fix on its own), `dpo_guarded`
(both layers: the dpo model behind the guard).

Example:
    >>> out = run_safety(get_profile("classroom"))     # doctest: +SKIP
    >>> out["dpo"]["refusal_rate"]                      # doctest: +SKIP
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..engine.generate import answers
from ..world.corpus import chat_splits, load_world, qa_items, split_countries
from ..world.probes import QAAccuracy, qa_eval
from ..world.safety import (
    HAZARDS,
    OverRefusalRate,
    RefusalRate,
    SafetyPrompt,
    bias_pairs,
    disagreements,
    load_eval_prompts,
    load_redteam,
    looks_like_refusal,
    preference_pairs,
    safety_chat_examples,
    safety_prompts,
    templates,
)
from .profiles import Profile

STAGES = ("base", "sft", "safety_sft", "dpo", "guarded", "dpo_guarded")


def replier(model, tok, max_new_tokens: int = 40) -> Callable[[list[str]], list[str]]:
    """prompts -> greedy chat replies of `model` (one user turn each)."""
    return lambda prompts: answers(model, tok, prompts, max_new_tokens)


def refusal_eval(answer: Callable[[list[str]], list[str]], prompts: list[SafetyPrompt], guard=None) -> dict:
    """Refusal and over-refusal rates of the replies, by string matching and (with a guard) by the classifier."""
    answers = answer([p.text for p in prompts])
    by_string = [looks_like_refusal(a) for a in answers]
    out = {"answers": answers}
    deciders = {"": by_string}
    if guard is not None:
        deciders["_classifier"] = guard.is_refusal(answers)
        out["disagreements"] = disagreements(answers, deciders["_classifier"])
    for suffix, refused in deciders.items():
        harm = [int(r) for p, r in zip(prompts, refused) if p.harmful]
        safe = [int(r) for p, r in zip(prompts, refused) if not p.harmful]
        out["refusal_rate" + suffix] = RefusalRate().compute(refused=harm)["refusal_rate"] if harm else None
        out["over_refusal_rate" + suffix] = (OverRefusalRate().compute(refused=safe)["over_refusal_rate"]
                                             if safe else None)
    out["refusal_by_category"] = {c: sum(r for p, r in zip(prompts, by_string) if p.harmful and p.category == c)
                                  / max(1, sum(p.harmful and p.category == c for p in prompts)) for c in HAZARDS}
    return out


def redteam_prompts(path: str | Path | None) -> list[SafetyPrompt]:
    """The learner's red-team file as prompts (harmful ones get their category's first refusal as ideal reply)."""
    if path is None or not Path(path).exists():
        return []
    cats = templates()["categories"]
    generic = "I can't help with that request. I can help with questions about countries, travel or everyday tasks."
    out = []
    for row in load_redteam(path):
        cat = row.get("category") or ""
        ideal = cats[cat]["refusals"][0] if cat in cats else generic
        out.append(SafetyPrompt(row["prompt"], row["label"] == "harmful", cat or "redteam", "redteam", ideal))
    return out


def eval_sets(profile: Profile, redteam_path: str | Path | None = None,
              eval_prompts_path: str | Path | None = None) -> dict:
    """The prompts every stage is measured on: "eval" (trained intents, new phrasings), "eval_unseen"
    (intents never trained on), "redteam" (the learner's red-team file, if any), "user" (the learner's
    evaluation-only prompts, if any: never trained on), and the held-out QA questions."""
    world, seed = load_world(), profile.safety.seed
    return {"eval": safety_prompts("eval", 3, seed), "eval_unseen": safety_prompts("eval_unseen", 3, seed),
            "redteam": redteam_prompts(redteam_path),
            "user": load_eval_prompts(eval_prompts_path) if eval_prompts_path else [],
            "qa": qa_items(world, split_countries(world)["heldout"])}


def measure(answer: Callable, tok_model: tuple | None, sets: dict, guard=None) -> dict:
    """One stage's figures: refusal / over-refusal (string and classifier) on every prompt set, held-out QA.

    `tok_model` = (model, tokenizer) for plain chat; None when `answer` is a filtered chat (the QA
    questions then go through the same filter).
    """
    r = refusal_eval(answer, sets["eval"], guard)
    out = {k: v for k, v in r.items() if k not in ("answers", "disagreements")}
    for name in ("eval_unseen", "redteam"):
        if sets.get(name):
            extra = refusal_eval(answer, sets[name])
            out[f"{name}_refusal_rate"] = extra["refusal_rate"]
            out[f"{name}_over_refusal_rate"] = extra["over_refusal_rate"]
    if sets.get("user"):  # the learner's evaluation-only prompts
        extra = refusal_eval(answer, sets["user"])
        out["eval_prompts"] = {"refusal_rate": extra["refusal_rate"], "over_refusal_rate": extra["over_refusal_rate"],
                               "n_harmful": sum(p.harmful for p in sets["user"]),
                               "n_safe": sum(not p.harmful for p in sets["user"])}
        out["_user_answers"] = extra["answers"]
    qa = sets["qa"]
    if tok_model is not None:
        out["heldout_qa_accuracy"] = qa_eval(tok_model[0], tok_model[1], qa)["accuracy"]
    else:
        replies = answer([it.question for it in qa])
        out["heldout_qa_accuracy"] = QAAccuracy().compute(predictions=replies,
                                                          references=[it.expected for it in qa])["accuracy"]
    out["n_disagreements"] = len(r.get("disagreements", []))
    out["_answers"], out["_disagreements"] = r["answers"], r.get("disagreements", [])
    return out


@torch.no_grad()
def bias_gap(model, tok, pairs: list[tuple[str, str, str]] | None = None) -> dict:
    """Mean |log-prob gap| (nats) of the text AFTER the swapped word, per attribute: how much the swap
    alone changes what the model expects next. 0 = the swap changes nothing."""
    pairs = pairs if pairs is not None else bias_pairs()
    device = next(model.parameters()).device
    model.eval()
    gaps: dict[str, list[float]] = {}
    for a, b, attribute in pairs:
        lps = []
        ids = [[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"]] for t in (a, b)]
        k = 0
        while k < min(map(len, ids)) - 1 and ids[0][-1 - k] == ids[1][-1 - k]:
            k += 1  # the shared token suffix: what follows the swap
        for seq in ids:
            x = torch.tensor([seq], device=device)
            logp = model(input_ids=x).logits[0, :-1].float().log_softmax(-1)  # (T-1, V)
            tok_lp = logp.gather(-1, x[0, 1:, None]).squeeze(-1)  # (T-1,)
            lps.append(float(tok_lp[-k:].sum()) if k else 0.0)
        gaps.setdefault(attribute, []).append(abs(lps[0] - lps[1]))
    by = {k: sum(v) / len(v) for k, v in gaps.items()}
    return {"mean_abs_gap": sum(sum(v) for v in gaps.values()) / max(1, len(pairs)), "by_attribute": by}


def safety_examples(profile: Profile, redteam: list[SafetyPrompt] = ()) -> list[dict]:
    """Notebook 03's chat data with safety examples mixed in: `safety.mix` of them per chat example."""
    s = profile.safety
    chats = chat_splits(per_fact=profile.sft.per_fact, seed=profile.sft.seed)["train"]
    pool = safety_chat_examples("train", s.n_per_template, s.seed)
    rng = random.Random(s.seed)
    n = round(s.mix * len(chats))
    mixed = [pool[i % len(pool)] for i in rng.sample(range(max(n, len(pool))), n)] if pool and n else []
    found = [{"messages": [{"role": "user", "content": p.text}, {"role": "assistant", "content": p.answer}]}
             for p in redteam if p.harmful]  # the learner's red-team finds, refused: always in
    return chats + mixed + found


def run_safety(profile: Profile, *, redteam_path: str | Path | None = None,
               eval_prompts_path: str | Path | None = None, log: Callable = print, callbacks=()) -> dict:
    """The whole of notebook 04 headless: every stage measured; returns JSON-ready figures (and models)."""
    from ..engine.dpo import dpo
    from ..engine.models import merge_lora
    from .artifacts import base_model, sft_model
    from .guard import GuardedChat, guard_data, train_guard
    from .sft import finetune_recipe

    t0, s = time.perf_counter(), profile.safety
    say = log
    log = lambda m: say(f"[{time.perf_counter() - t0:5.0f} s] {m}")  # noqa: E731
    sets = eval_sets(profile, redteam_path, eval_prompts_path)  # "user" prompts: measured, never trained on
    base, sft = base_model(profile), sft_model(profile)
    tok = base.tokenizer
    out: dict = {"profile": profile.name, "eval_harmful": sum(p.harmful for p in sets["eval"]),
                 "eval_safe": sum(not p.harmful for p in sets["eval"]), "redteam_prompts": len(sets["redteam"]),
                 "bias": {}}
    log("training the guard classifier ...")
    guard = train_guard(base, s, device=profile.pretrain.device, callbacks=callbacks)
    g = guard.evaluate(guard_data("eval", 3, s.seed))
    out.update(guard_precision=g["precision"], guard_recall=g["recall"], guard_f1=g["f1"], guard_accuracy=g["accuracy"])
    out["guard_unseen"] = guard.evaluate(guard_data("eval_unseen", 3, s.seed))
    models = {}

    def stage(name: str, model) -> None:
        log(f"measuring {name} ...")
        models[name] = model
        out[name] = measure(replier(model, tok, s.max_new_tokens), (model, tok), sets, guard)
        out["bias"][name] = bias_gap(model, tok)

    stage("base", base.model)
    stage("sft", sft.model)
    log("the SFT model behind the guard ...")
    out["guarded"] = measure(GuardedChat(sft.model, tok, guard, s.max_new_tokens), None, sets, guard)
    log("safety SFT: chat data + safety examples ...")
    examples = safety_examples(profile, sets["redteam"])
    stage("safety_sft", merge_lora(finetune_recipe(profile, base, examples=examples, measure=False,
                                                   callbacks=callbacks).model))
    out["safety_sft"]["train_examples"] = len(examples)
    log("DPO on the safety-tuned model ...")  # the adapter goes into safety_sft's modules: measured above
    pairs = preference_pairs("train", s.pairs_per_template, s.seed)
    policy, hist = dpo(models["safety_sft"], tok, pairs, s.dpo_config(), max_len=profile.sft.seq_len,
                       device=profile.pretrain.device, callbacks=callbacks)
    stage("dpo", policy)
    out["dpo"]["pairs"], out["dpo"]["reward_curve"] = len(pairs), hist.metrics
    log("the DPO model behind the guard ...")
    out["dpo_guarded"] = measure(GuardedChat(policy, tok, guard, s.max_new_tokens), None, sets, guard)
    sft_qa = out["sft"]["heldout_qa_accuracy"]
    ok = [st for st in STAGES[2:] if out[st]["heldout_qa_accuracy"] >= sft_qa - 0.05]
    out["best"] = max(ok or STAGES[2:], key=lambda st: out[st]["refusal_rate"] - out[st]["over_refusal_rate"])
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["_models"], out["_guard"], out["_sets"] = models, guard, sets
    return out


def summary_table(out: dict, stages: list[str] | tuple[str, ...] = STAGES) -> str:
    """The stages side by side: refusal and over-refusal (string matching; classifier in brackets),
    the same on unseen intents, and held-out QA accuracy."""
    def f(x) -> str:
        return "  -  " if x is None else f"{x:.2f}"

    head = (f"{'stage':<11} {'refusal':>7} {'(clf)':>6} {'over-ref.':>9} {'(clf)':>6}   "
            f"{'unseen ref.':>11} {'unseen over':>11}   {'held-out QA':>11}")
    lines = [head, "-" * len(head)]
    for st in stages:
        r = out[st]
        lines.append(f"{st:<11} {f(r['refusal_rate']):>7} {f(r.get('refusal_rate_classifier')):>6} "
                     f"{f(r['over_refusal_rate']):>9} {f(r.get('over_refusal_rate_classifier')):>6}   "
                     f"{f(r.get('eval_unseen_refusal_rate')):>11} {f(r.get('eval_unseen_over_refusal_rate')):>11}   "
                     f"{f(r['heldout_qa_accuracy']):>11}")
    return "\n".join(lines)


def to_json(out: dict) -> dict:
    """The JSON-ready part of `run_safety`'s result (models, answers and long lists left out)."""
    return {k: ({kk: vv for kk, vv in v.items() if not kk.startswith("_")} if isinstance(v, dict) else v)
            for k, v in out.items() if not k.startswith("_")}
