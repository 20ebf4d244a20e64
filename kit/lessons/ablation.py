"""Why only half the countries have Q&A pages: the ablation that shows it (notebook 01).

Pre-training reads every fact of every country in encyclopedic prose, and Q&A pages ("Q: What is the
capital of Peru? A: The capital of Peru is Lima.") about the "train" half only. Fine-tuning then asks
about the other half. The Q&A pages teach the model that stored facts can be asked for and recalled;
without them, facts it read only in prose are much harder to draw out by fine-tuning (Allen-Zhu & Li,
"Physics of Language Models, part 3.1": knowledge must be made extractable during pre-training).

`qa_pages_ablation(profile)` pre-trains a second base model with `qa_per_country=0` (no Q&A pages at all),
fine-tunes both with the same recipe, and compares their dev QA on the same questions. Both models are
cached (`sft_model`), so the second call takes seconds.

Example:
    >>> out = qa_pages_ablation(get_profile("classroom"))      # doctest: +SKIP
    >>> out["change"]["diff"] < 0                               # doctest: +SKIP
    True
"""

from __future__ import annotations

from .artifacts import sft_model
from .profiles import Profile, get_profile
from .sft import compare_runs

KEYS = ("heldout_qa_strict", "heldout_qa_strict_ci", "heldout_qa_accuracy", "format_rate", "base_heldout_qa_strict",
        "cloze_after_heldout_countries")


def qa_pages_ablation(profile: Profile | str | None = None, callbacks=()) -> dict:
    """The profile's fine-tuned model against one whose base model read no Q&A pages at all.

    Returns {"with_qa_pages": figures, "without_qa_pages": figures, "change": paired bootstrap of the dev strict
    QA (without - with), "profiles": the two corpus settings}.
    """
    profile = get_profile(profile)
    without = profile.with_corpus(qa_per_country=0)
    a, b = sft_model(profile, callbacks=callbacks), sft_model(without, callbacks=callbacks)
    return {"with_qa_pages": {k: a.info.get(k) for k in KEYS}, "without_qa_pages": {k: b.info.get(k) for k in KEYS},
            "change": compare_runs(a.info, b.info),
            "profiles": {"with_qa_pages": profile.corpus.qa_per_country, "without_qa_pages": 0}}
