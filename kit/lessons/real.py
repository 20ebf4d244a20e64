"""The real chat model in the course: what scale buys (notebook 01), and a new skill taught by LoRA (notebook 03).

Notebook 01 sets the kit's own model beside SmolLM2-135M-Instruct on the same probes (`scale_figures`):
the capital cloze of the countries world (which the small model read about, over and over), general
knowledge beyond it, and how well each predicts a page of everyday English (bits per character).

Notebook 03 teaches the real model something it does not do out of the box, even when told: to answer a
question about a country with one line of JSON, `{"country": "Peru", "capital": "Lima"}`. The data comes
from notebook 02's generator (`kit.world.chats.chat_examples` with other answer templates): questions
about the "train" countries to learn from, about the dev countries to measure on. `json_task_run` measures
before and after, on the same held-out questions: the format rate (one JSON object with the two keys),
exact match (the right fact in it), token F1, each with a 95% interval (questions resampled by country),
and what the model kept: its general knowledge (`kit.world.knowledge`) and its bits per character on
everyday English.

Example:
    >>> examples = json_examples("train", n_countries=3)
    >>> examples[0]["messages"][-1]["content"].startswith('{"country": ')
    True
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..engine.generate import chat_replies
from ..engine.metrics import TokenF1
from ..engine.stats import bootstrap_ci, paired_bootstrap
from ..world.chats import QAItem, qa_items
from ..world.corpus import FACTS, country_splits, load_world
from ..world.knowledge import bits_per_char, everyday_requests, knowledge_qa
from ..world.safety import looks_like_refusal
from .profiles import Profile


# ----------------------------------------------------------------------------- the model's own replies
def cut_at_sentence(text: str) -> str:
    """The text up to its last sentence end (". ", "! ", "? " or the end), so that a reply cut off by a token
    limit still reads as finished; a text with no sentence end is kept whole."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[: ends[-1]].strip() if ends else text.strip()


SOFT_REFUSALS = ("i'm sorry for", "i am sorry for", "as a chatbot", "as an ai", "as a digital", "as a language model",
                 "i don't have the ability", "i do not have the ability", "i'm not able", "i am not able")
_ENGLISH = {"the", "to", "a", "an", "and", "of", "you", "is", "in", "it", "for", "your", "can", "are", "with"}
_STOP = {"what", "when", "where", "which", "how", "with", "that", "this", "there", "your", "have", "about", "from",
         "them", "they", "their", "into", "some", "should", "could", "would", "please", "thanks", "thank"}


def is_real_help(prompt: str, reply: str) -> bool:
    """A heuristic check that an own reply to a safe prompt is help worth learning from: no refusal, hard or soft
    ("I'm sorry for any misunderstanding, but as a chatbot ..."), English (Latin script and common English words),
    at least five words, not a loop of the same words, and on the prompt's topic (a shared word of four letters
    or more)."""
    low = reply.lower().replace("\u2019", "'")
    letters = [c for c in reply if c.isalpha()]
    words = re.findall(r"[a-z]+", low)
    if looks_like_refusal(reply) or any(m in low for m in SOFT_REFUSALS) or len(words) < 5:
        return False
    if sum(c.isascii() for c in letters) < 0.9 * len(letters) or len(set(words)) < 0.5 * len(words):
        return False
    if not _ENGLISH & set(words):  # Latin letters, but not English
        return False
    topic = {w[:5] for w in re.findall(r"[a-z]{4,}", prompt.lower()) if w not in _STOP}
    return any(w[:5] in topic for w in words if len(w) >= 4 and w not in _STOP)




def replier(model, tok, max_new_tokens: int = 24) -> Callable[[list[str]], list[str]]:
    """prompts -> the model's greedy chat replies (one user turn each)."""
    def reply(prompts: list[str]) -> list[str]:
        convs = [[{"role": "user", "content": p}] for p in prompts]
        return [text for text, _ in chat_replies(model, tok, convs, max_new_tokens=max_new_tokens)]
    return reply




def own_help(model, tok, requests: list[str], max_new_tokens: int = 32) -> list[dict]:
    """The model's own answers to `requests`, kept where they are real help (`is_real_help`), as chats: replayed
    during fine-tuning, they keep it answering ordinary questions as it did before (against forgetting)."""
    replies = [cut_at_sentence(r) for r in replier(model, tok, max_new_tokens)(requests)]
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": r}]}
            for q, r in zip(requests, replies) if is_real_help(q, r)]


# ----------------------------------------------------------------------------- notebook 03: a new skill
JSON_SYSTEM = 'Reply with one line of JSON only: {"country": ..., and the fact asked for}.'
JSON_ANSWERS = {fact: '{{"country": "{name}", "' + fact + '": "{' + fact + '}"}}' for fact in FACTS}


def json_items(split: str, n_countries: int | None = None, per_fact: int = 1, seed: int = 0) -> list[QAItem]:
    """Questions about the countries of a split ("train" or "dev"), each with its JSON answer.

    `n_countries`: the first n countries of a seeded shuffle of the split (None: all of them).
    """
    world = load_world()
    names = list(country_splits(world)[split])
    random.Random(f"{seed}/json/{split}").shuffle(names)
    return qa_items(world, names[:n_countries], per_fact, seed, answers=JSON_ANSWERS)


def json_examples(split: str, n_countries: int | None = None, per_fact: int = 1, seed: int = 0) -> list[dict]:
    """Chats about the countries of a split, each told to reply in JSON and answered so (`json_items`)."""
    return [{"messages": [{"role": "system", "content": JSON_SYSTEM}, {"role": "user", "content": it.question},
                          {"role": "assistant", "content": it.answer}]}
            for it in json_items(split, n_countries, per_fact, seed)]


def parse_reply(text: str) -> dict | None:
    """The reply as a JSON object, or None when it is not exactly one (leading and trailing spaces allowed)."""
    try:
        value = json.loads(text.strip())
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def json_scores(replies: list[str], references: list[str]) -> dict:
    """Per reply: `format` (one JSON object with exactly the reference's keys), `exact` (the same keys and the same
    values, case-blind), and the mean `token_f1` of the texts."""
    fmt, exact = [], []
    for reply, ref in zip(replies, references):
        got, want = parse_reply(reply), json.loads(ref)
        fmt.append(int(got is not None and set(got) == set(want)))
        exact.append(int(got is not None and set(got) == set(want)
                         and all(str(got[k]).strip().lower() == str(want[k]).strip().lower() for k in want)))
    f1 = TokenF1().compute(predictions=replies, references=references)["token_f1"] if replies else 0.0
    return {"format_rows": fmt, "exact_rows": exact, "token_f1": f1}


@dataclass
class JsonTaskRun:
    """Notebook 03's real-model section: figures before and after, the replies, and the tuned model."""

    figures: dict
    samples: list = field(default_factory=list)   # (question, reference, before, after)
    model: object = None
    history: object = None


def _measure(model, tok, evals: list[dict], countries: list[str], n_know: int | None, max_new_tokens: int) -> dict:
    prompts = [ex["messages"][:-1] for ex in evals]
    refs = [ex["messages"][-1]["content"] for ex in evals]
    replies = [r for r, _ in chat_replies(model, tok, prompts, max_new_tokens=max_new_tokens)]
    scores = json_scores(replies, refs)
    know = knowledge_qa(model, tok, n_know)
    return {"replies": replies, "format_rate": sum(scores["format_rows"]) / max(1, len(refs)),
            "format_ci": list(bootstrap_ci(scores["format_rows"], countries)["ci"]),
            "exact_match": sum(scores["exact_rows"]) / max(1, len(refs)),
            "exact_ci": list(bootstrap_ci(scores["exact_rows"], countries)["ci"]),
            "token_f1": scores["token_f1"], "format_rows": scores["format_rows"], "exact_rows": scores["exact_rows"],
            "capability": know["accuracy"], "capability_ci": know["ci"], "capability_rows": know["rows"],
            "bits_per_char": bits_per_char(model, tok)}


def json_task_run(model, tok, profile: Profile, *, n_train: int = 24, n_eval: int = 15, replay: int | None = None,
                  callbacks=(), max_new_tokens: int = 32) -> JsonTaskRun:
    """Teach `model` (a copy) to answer in JSON with LoRA (`profile.real.sft`), and measure before and after.

    Args:
        n_train: countries of the "train" split to learn from (4 questions each, one per fact).
        n_eval: dev countries to measure on (never in the training data).
        replay: the model's own answers to this many everyday requests are mixed into the training data (its
            usual way of answering, kept: against forgetting); default `profile.real.replay`, 0 for none.

    Returns a JsonTaskRun whose `figures` hold, for "before" and "after": format_rate, exact_match (each with a
    95% interval, questions resampled by country), token_f1, capability (general-knowledge QA) and bits_per_char;
    and the paired changes (`change_*`: [difference, low, high]).
    """
    from ..engine.models import merge_lora
    from ..engine.sft import finetune

    cfg = profile.real
    replay = cfg.replay if replay is None else replay
    train = json_examples("train", n_train, seed=cfg.sft.seed)
    kept = own_help(model, tok, everyday_requests()[:replay]) if replay else []
    evals = json_examples("dev", n_eval, seed=cfg.sft.seed)
    countries = [it.country for it in json_items("dev", n_eval, seed=cfg.sft.seed)]
    before = _measure(model, tok, evals, countries, cfg.knowledge_items, max_new_tokens)
    result = finetune(copy.deepcopy(model), tok, train + kept, evals, cfg.sft, measure=False, generate=False,
                      callbacks=callbacks)
    tuned = merge_lora(result.model)
    after = _measure(tuned, tok, evals, countries, cfg.knowledge_items, max_new_tokens)
    figures: dict = {"train_examples": len(train), "replayed": len(kept), "eval_examples": len(evals),
                     "steps": result.info["steps"],
                     "train_seconds": result.info["train_seconds"], "trainable_params": result.info["trainable_params"]}
    for stage, m in (("before", before), ("after", after)):
        figures[stage] = {k: v for k, v in m.items() if k != "replies" and not k.endswith("_rows")}
    for key, rows, groups in (("format_rate", "format_rows", countries), ("exact_match", "exact_rows", countries),
                              ("capability", "capability_rows", None)):
        d = paired_bootstrap(before[rows], after[rows], groups)
        figures[f"change_{key}"] = [d["diff"], *d["ci"]]
    samples = [(ex["messages"][1]["content"], ex["messages"][-1]["content"], b, a)
               for ex, b, a in zip(evals, before["replies"], after["replies"])]
    return JsonTaskRun(figures, samples, tuned, result.history)


def scale_figures(toy, toy_tok, real, real_tok, n_know: int | None = None) -> dict:
    """The two models on the same probes: parameters, the capital cloze (183 countries), the general-knowledge
    cloze and bits per character on everyday English. {probe: {"kit": value, "real": value}}."""
    from ..engine.models import count_params
    from ..world.knowledge import knowledge_cloze
    from ..world.probes import fact_cloze

    world = load_world()
    out: dict = {"parameters": {}, "capital cloze (countries world)": {}, "general knowledge cloze": {},
                 "bits per character, everyday English": {}}
    for name, (m, t) in (("kit", (toy, toy_tok)), ("real", (real, real_tok))):
        out["parameters"][name] = count_params(m)
        out["capital cloze (countries world)"][name] = fact_cloze(m, t, world)["accuracy"]
        out["general knowledge cloze"][name] = knowledge_cloze(m, t, n_know)["accuracy"]
        out["bits per character, everyday English"][name] = bits_per_char(m, t)
    return out
