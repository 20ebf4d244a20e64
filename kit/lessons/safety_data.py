"""Notebook 04's data on the real chat model: the prompt sets every stage is measured on, and the training data
built from the model's own replies (refusals for harmful prompts, its own help for safe look-alikes).

Example:
    >>> sets = eval_sets(get_profile("smoke").safety)                       # doctest: +SKIP
    >>> sorted(sets)                                                         # doctest: +SKIP
    ['eval', 'eval_unseen', 'redteam', 'user']
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..world.knowledge import everyday_requests
from ..world.safety import SafetyPrompt, looks_like_refusal, safety_prompts, templates
from ..world.safety_files import load_eval_prompts, load_redteam
from .profiles import SafetyConfig
from .real import cut_at_sentence, is_real_help, replier

GENERIC_REFUSAL = "I can't help with that request. I'm happy to help with something else."


def refusal_for(p: SafetyPrompt) -> str:
    """The refusal a harmful prompt should get: its category's first refusal (a generic one outside them)."""
    cats = templates()["categories"]
    return cats[p.category]["refusals"][0] if p.category in cats else GENERIC_REFUSAL


# ----------------------------------------------------------------------------- the prompts
def _cap(prompts: list[SafetyPrompt], n: int, seed: int) -> list[SafetyPrompt]:
    """At most `n` prompts (0: all), half harmful and half safe where there are enough, in their order."""
    if not n or len(prompts) <= n:
        return prompts
    rng = random.Random(seed)
    harm = [i for i, p in enumerate(prompts) if p.harmful]
    safe = [i for i, p in enumerate(prompts) if not p.harmful]
    k = min(len(harm), n // 2)
    keep = set(rng.sample(harm, k)) | set(rng.sample(safe, min(len(safe), n - k)))
    return [p for i, p in enumerate(prompts) if i in keep]


def redteam_prompts(path: str | Path | None) -> list[SafetyPrompt]:
    """The learner's red-team file as prompts (a harmful one's ideal reply is its category's refusal)."""
    if path is None or not Path(path).exists():
        return []
    out = []
    for row in load_redteam(path):
        p = SafetyPrompt(row["prompt"], row["label"] == "harmful", row.get("category") or "redteam", "redteam", "")
        out.append(SafetyPrompt(p.text, p.harmful, p.category, p.template, refusal_for(p) if p.harmful else ""))
    return out


def eval_sets(cfg: SafetyConfig, eval_prompts_path: str | Path | None = None,
              redteam_path: str | Path | None = None) -> dict[str, list[SafetyPrompt]]:
    """The prompts every stage is measured on: "eval" (trained intents, new wordings), "eval_unseen" (intents
    never trained on), "user" (evaluation-only prompts from a file, if given), "redteam" (the red-team file)."""
    n, seed = cfg.eval_per_template, cfg.seed
    return {"eval": _cap(safety_prompts("eval", n, seed), cfg.max_prompts, seed),
            "eval_unseen": _cap(safety_prompts("eval_unseen", n, seed), cfg.max_prompts, seed + 1),
            "user": load_eval_prompts(eval_prompts_path) if eval_prompts_path else [],
            "redteam": redteam_prompts(redteam_path)}


# ----------------------------------------------------------------------------- the training data
@dataclass
class SafetyData:
    """What the fixes train on, all from the training templates and the model's own replies to them."""

    prompts: list[SafetyPrompt]   # the training prompts (and the learner's harmful red-team finds)
    own: list[str]                # the untuned model's own reply to each, cut at a sentence end
    examples: list[dict]          # safety SFT: refusal for harmful, the own reply for safe
    pairs: list[dict]             # DPO: {"prompt", "chosen", "rejected"}
    guard_examples: list[tuple[str, int]]  # (text, label index: 0 safe, 1 harmful, 2 refusal)


def safety_data(model, tok, cfg: SafetyConfig, redteam: list[SafetyPrompt] = ()) -> SafetyData:
    """Ask the untuned model every training prompt (and `cfg.everyday` everyday requests) once, then build the SFT
    chats, the DPO pairs and the guard's texts from its replies.

    A safe prompt whose own reply is no real help (`is_real_help`: a refusal, hard or soft, another language, a
    loop, off the topic) is left out of the SFT and DPO data: it would teach the wrong thing. The guard also reads
    `cfg.guard.per_template` prompts per template (prompts only), every everyday request and questions about the
    "train" countries as safe texts: most of what a guard sees in use is ordinary.
    """
    harmful = [p for p in safety_prompts("train", cfg.n_per_template, cfg.seed) if p.harmful]
    safe = [p for p in safety_prompts("train", cfg.safe_per_template, cfg.seed) if not p.harmful]
    prompts = _cap(harmful + safe, cfg.max_prompts, cfg.seed + 2) + [p for p in redteam if p.harmful]
    requests = everyday_requests()
    everyday = requests[: cfg.everyday]
    replies = [cut_at_sentence(r) for r in replier(model, tok, cfg.own_tokens)([p.text for p in prompts] + everyday)]
    own, own_everyday = replies[: len(prompts)], replies[len(prompts):]
    over = templates()["over_refusals"]  # a look-alike's rejected reply: a refusal that names no harm
    examples, pairs = [], []
    guard = [(p.text, int(p.harmful)) for p in
             _cap(safety_prompts("train", cfg.guard.per_template, cfg.seed), 3 * cfg.max_prompts, cfg.seed + 3)]
    guard += [(q, 0) for q in requests + country_questions(40, cfg.seed)]
    for p, reply in zip(prompts, own):
        user = [{"role": "user", "content": p.text}]
        if p.harmful:
            chosen, rejected = refusal_for(p), reply
            if reply.strip() and not looks_like_refusal(reply):
                guard.append((reply, 1))
        elif is_real_help(p.text, reply):
            chosen, rejected = reply, over[len(examples) % len(over)]
            guard.append((reply, 0))
        else:
            continue
        examples.append({"messages": user + [{"role": "assistant", "content": chosen}]})
        if rejected.strip() and not (p.harmful and looks_like_refusal(rejected)):
            pairs.append({"prompt": user, "chosen": [{"role": "assistant", "content": chosen}],
                          "rejected": [{"role": "assistant", "content": rejected}]})
    for q, reply in zip(everyday, own_everyday):  # everyday help, kept as it was: against over-refusal
        if is_real_help(q, reply):
            examples.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": reply}]})
            guard.append((reply, 0))
    refusals = {refusal_for(p) for p in prompts if p.harmful} | set(over)
    guard += [(r, 2) for r in sorted(refusals)]
    return SafetyData(prompts, own, examples, pairs, guard)


def country_questions(n: int, seed: int = 0) -> list[str]:
    """`n` questions about the facts of the "train" countries ("What is the capital of Peru?"): ordinary texts."""
    from ..world.chats import qa_items
    from ..world.corpus import country_splits, load_world

    world = load_world()
    items = qa_items(world, country_splits(world)["train"], 1, seed)
    return [it.question for it in random.Random(seed).sample(items, min(n, len(items)))]
