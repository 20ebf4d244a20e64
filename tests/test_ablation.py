"""Notebook 01's ablation: the same recipe on a base model pre-trained without any Q&A pages."""

from kit.lessons.ablation import ablation_cached, qa_pages_ablation
from kit.lessons.artifacts import base_model
from kit.world.corpus import build_corpus


def test_ablation_compares_two_base_models_that_differ_only_in_qa_pages(cache, tiny_profile):
    assert not ablation_cached(tiny_profile)  # an empty cache: the ablation would pre-train
    out = qa_pages_ablation(tiny_profile)
    assert ablation_cached(tiny_profile)
    without = tiny_profile.with_corpus(qa_per_country=0)
    assert base_model(without).path != base_model(tiny_profile).path  # a second base model, cached on its own
    assert not any(d.startswith(("Q: ", "Question: ")) for d in build_corpus(without.corpus).train)
    for side in ("with_qa_pages", "without_qa_pages"):
        r = out[side]
        assert 0 <= r["heldout_qa_strict"] <= r["heldout_qa_accuracy"] <= 1 and len(r["heldout_qa_strict_ci"]) == 2
    change = out["change"]
    assert change["diff"] == out["without_qa_pages"]["heldout_qa_strict"] - out["with_qa_pages"]["heldout_qa_strict"]
    assert change["ci"][0] <= change["diff"] <= change["ci"][1]
    again = qa_pages_ablation(tiny_profile)  # both fine-tuned models come from the cache now
    assert again["with_qa_pages"] == out["with_qa_pages"]
