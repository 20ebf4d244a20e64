"""Do the Q&A pages about half of the countries help? The ablation that tests it (notebook 01).

Pre-training reads every fact of every country in encyclopedic prose, and Q&A pages ("Q: What is the
capital of Peru? A: The capital of Peru is Lima.") about the "train" half only. Fine-tuning then asks
about the other half. The hypothesis (Allen-Zhu & Li, "Physics of Language Models, part 3.1"): Q&A data
about part of the population makes the rest's facts easier to draw out by fine-tuning. On the classroom
profile it did not hold (dev QA strict 0.659 with the pages, 0.705 without; notebook 01 says more).

`qa_pages_ablation(profile)` pre-trains a second base model with `qa_per_country=0` (no Q&A pages at all),
fine-tunes both with the same recipe, and compares their dev QA on the same questions. Both models are
cached (`sft_model`), so the second call takes seconds; `ablation_cached(profile)` says whether it would.

Example:
    >>> out = qa_pages_ablation(get_profile("classroom"))      # doctest: +SKIP
    >>> out["change"]["diff"] < 0                               # doctest: +SKIP
    True
"""

from __future__ import annotations

from ..engine.cache import is_complete
from .artifacts import sft_entry, sft_model
from .profiles import Profile, get_profile
from .recipe import compare_runs
from .results import SFT

KEYS = SFT.names("ablation")


def ablation_cached(profile: Profile | str | None = None) -> bool:
    """True when both fine-tuned models of the ablation are in the cache (the ablation then takes seconds)."""
    profile = get_profile(profile)
    return all(is_complete(sft_entry(p)) for p in (profile, profile.with_corpus(qa_per_country=0)))


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
