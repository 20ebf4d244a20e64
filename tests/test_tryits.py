"""Every "Try it" of notebooks 01, 03, 04 and 05 does what it says: each test applies the change in the smoke
profile and checks that the figure the Try-it names moved. A Try-it with no test here fails the first test."""

import json
import os
import re
from pathlib import Path

import pytest
import torch

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHECKED = ("01_pretraining_recap", "03_fine_tuning", "04_safety", "05_iteration")

# a phrase of each Try-it -> the test below that applies it
TRY_ITS = {
    "print `corpus.train[3:6]`": "test_01_other_documents",
    "set `VOCAB_SIZE = 300`": "test_01_vocab_size_reaches_the_model",
    "profile.with_pretrain(max_steps=100)": "test_01_shorter_pretraining",
    'change the prompt to "The main language of Brazil is"': "test_01_other_prompt",
    'fact="language"': "test_01_other_fact",
    "set `epochs` to 1 in the panel": "test_03_panel_epochs",
    "set `replay` to 1.0 in the panel": "test_03_panel_replay",
    'kit.fact_cloze(real, real_tok, world, fact="currency")': "test_01_real_model_other_fact",
    "rerun with replay on": "test_03_epoch_curve_with_replay",
    "json_task_run(real, real_tok, profile, replay=0)": "test_03_real_model_without_replay",
    "cfg.guard.__class__(layer=4)": "test_04_guard_layer",
    'profile.with_safety(sft={"epochs": 1})': "test_04_safety_sft_epochs",
    "plain DPO, without the anchor": "test_04_plain_dpo",
    "screen the replies too": "test_04_screen_replies",
    "probe your own pair": "test_04_own_bias_pair",
    "add ten prompts of your own": "test_04_own_eval_prompts",
    '"lr": [lr / 2, lr, 2 * lr]': "test_05_longer_grid",
    "target the worst *continent*": "test_05_continent_round",
    "set `NOISE = 0.3`": "test_05_noisy_reviewer",
    "rate with a taste of your own": "test_05_own_taste",
}


def try_its() -> list[tuple[str, str]]:
    out = []
    for name in CHECKED:
        for cell in json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["cells"]:
            text = "".join(cell["source"])
            out += [(name, part) for part in text.split("**Try it:**")[1:]]
    return out


def test_every_try_it_has_a_test():
    found = try_its()
    assert len(found) >= len(TRY_ITS)
    for notebook, text in found:
        flat = " ".join(text.split())
        keys = [k for k in TRY_ITS if " ".join(k.split()) in flat]
        assert keys, f"{notebook}: no test applies this Try it: {flat[:120]!r}"
        assert all(callable(globals().get(TRY_ITS[k])) for k in keys)


# ----------------------------------------------------------------------------- shared smoke artefacts
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke profile with a private cache for this module (its base model is built once)."""
    old = os.environ.get("KIT_CACHE")
    os.environ["KIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    from kit.lessons.profiles import get_profile

    yield get_profile("smoke")
    if old is None:
        os.environ.pop("KIT_CACHE", None)
    else:
        os.environ["KIT_CACHE"] = old


@pytest.fixture(scope="module")
def base(smoke):
    from kit.lessons.artifacts import base_model

    return base_model(smoke)


# ----------------------------------------------------------------------------- notebook 01
def test_01_other_documents(smoke):
    from kit.world.corpus import build_corpus

    corpus = build_corpus(smoke.corpus)
    assert len(corpus.train[3:6]) == 3 and set(corpus.train[3:6]).isdisjoint(corpus.train[:3])


def test_01_vocab_size_reaches_the_model(smoke):
    from kit.lessons.artifacts import base_model, tokenizer_for

    sentence = "The capital of Burkina Faso is Ouagadougou, and a quokka is an animal."
    small = smoke.with_tokenizer(vocab_size=300).with_pretrain(max_steps=4, warmup_steps=1, eval_every=2)
    tok, small_tok = tokenizer_for(smoke), tokenizer_for(small)
    assert len(small_tok(sentence)["input_ids"]) > len(tok(sentence)["input_ids"])  # more tokens
    built = base_model(small)
    assert len(built.tokenizer) == len(small_tok) == built.info["vocab_size"]  # the model uses that tokenizer
    assert built.model.get_input_embeddings().weight.shape[0] == len(small_tok)


def test_01_shorter_pretraining(smoke, base):
    from kit.lessons.artifacts import base_model

    short = base_model(smoke.with_pretrain(max_steps=100))
    assert short.info["steps"] == 100 and short.info["val_loss"] > base.info["val_loss"]


def test_01_other_prompt(base):
    from kit.engine.generate import next_token_probs

    a = next_token_probs(base.model, base.tokenizer, "The capital of France is")
    b = next_token_probs(base.model, base.tokenizer, "The main language of Brazil is")
    assert a != b


def test_01_other_fact(base):
    from kit.world.corpus import load_world
    from kit.world.probes import fact_cloze

    world = load_world()
    capital, language = (fact_cloze(base.model, base.tokenizer, world, fact=f) for f in ("capital", "language"))
    assert [e[2] for e in capital["examples"]] != [e[2] for e in language["examples"]]
    assert language["examples"][0][0].startswith("The main language of")


# ----------------------------------------------------------------------------- notebook 03
def test_03_panel_epochs(smoke, base):
    from kit.widgets.panel import SFTPanel

    runs = {}
    for epochs in (smoke.sft.epochs, 1.0):
        panel = SFTPanel(smoke, base=base, out_dir=Path(os.environ["KIT_CACHE"]) / f"panel-{epochs}")
        panel.settings["epochs"] = epochs  # what the panel's control does
        panel.start(wait=True)
        runs[epochs] = panel.wait().info
    assert runs[1.0]["steps"] < runs[smoke.sft.epochs]["steps"] and runs[1.0]["epochs"] == 1.0


def test_03_panel_replay(smoke, base):
    from kit.engine.metrics import perplexity
    from kit.engine.tokenizer import encode_documents
    from kit.engine.train import TokenRows
    from kit.lessons.recipe import finetune_recipe
    from kit.world.corpus import build_corpus

    val = TokenRows(encode_documents(base.tokenizer, build_corpus(smoke.corpus).val), smoke.pretrain.seq_len)
    out = {}
    for replay in (smoke.sft.replay, 1.0):
        result = finetune_recipe(smoke.with_sft(replay=replay), base, measure=False)
        out[replay] = {**result.info, "ppl_after": perplexity(result.model, val, max_rows=16)["perplexity"]}
    a, b = out[smoke.sft.replay], out[1.0]
    assert b["replay_docs"] > a["replay_docs"] and b["steps"] > a["steps"] and b["ppl_after"] != a["ppl_after"]


def test_03_epoch_curve_with_replay(smoke, base):
    from kit.lessons.recipe import accuracy_by_epoch

    without = accuracy_by_epoch(smoke.with_sft(replay=0.0), 2, base, n_items=8)
    with_replay = accuracy_by_epoch(smoke, 2, base, n_items=8)
    assert len(with_replay.ppl) == len(with_replay.epochs) == 3  # epoch 0 is the base model
    assert with_replay.ppl != without.ppl
    assert len(with_replay.table().splitlines()) == 4


def test_01_real_model_other_fact(standin, world):
    model, tok = standin
    capital, currency = (kit_fact_cloze(model, tok, world, fact) for fact in ("capital", "currency"))
    assert capital["examples"][0][0].startswith("The capital of") and currency["examples"][0][0].startswith(
        "The currency of")
    assert 0 <= currency["accuracy"] <= 1


def kit_fact_cloze(model, tok, world, fact):
    from kit.world.probes import fact_cloze

    return fact_cloze(model, tok, world, fact=fact)


def test_03_real_model_without_replay(smoke, standin, monkeypatch):
    import kit.engine.sft
    import kit.lessons.real as real

    model, tok = standin
    kept = [{"messages": [{"role": "user", "content": "How do I boil an egg?"},
                          {"role": "assistant", "content": "Put it in boiling water for six minutes."}]}]
    monkeypatch.setattr(real, "own_help", lambda m, t, requests: kept if requests else [])
    seen, finetune = [], kit.engine.sft.finetune
    monkeypatch.setattr(kit.engine.sft, "finetune", lambda m, t, train, *a, **k: seen.append(train) or
                        finetune(m, t, train, *a, **k))
    runs = [real.json_task_run(model, tok, smoke, n_train=2, n_eval=1, replay=r) for r in (smoke.real.replay, 0)]
    assert [r.figures["replayed"] for r in runs] == [1, 0]
    assert kept[0] in seen[0] and kept[0] not in seen[1]  # the replayed answers reach the training data, or not
    assert {"capability", "bits_per_char"} <= set(runs[1].figures["after"]) and "change_capability" in runs[1].figures


# ----------------------------------------------------------------------------- notebook 04 (the real model's stand-in)
@pytest.fixture(scope="module")
def safety_setup(smoke, standin):
    from kit.lessons import safety_data as D

    model, tok = standin
    cfg = smoke.safety
    return model, tok, cfg, D.safety_data(model, tok, cfg), D.eval_sets(cfg)


def test_04_guard_layer(standin, safety_setup):
    from kit.lessons.guard import train_guard
    from kit.lessons.profiles import GuardConfig

    model, tok, cfg, data, sets = safety_setup
    texts = [(p.text, int(p.harmful)) for p in sets["eval"]]
    probs = [train_guard(model, tok, data.guard_examples, GuardConfig(layer=layer, per_template=1)).probs(
        [t for t, _ in texts]) for layer in (1, 2)]
    assert not torch.allclose(probs[0], probs[1])  # another block, other features, other verdicts


def test_04_safety_sft_epochs(smoke, safety_setup):
    from kit.lessons import safety_run as S

    model, tok, cfg, data, sets = safety_setup
    steps = [S.safety_sft(model, tok, data, p.safety)[1].info["steps"]
             for p in (smoke.with_safety(sft={"epochs": 2.0}), smoke.with_safety(sft={"epochs": 1.0}))]
    assert steps[1] < steps[0]


def test_04_plain_dpo(smoke, safety_setup):
    from kit.lessons import safety_run as S

    model, tok, _, data, sets = safety_setup
    cfg = smoke.with_safety(dpo={"epochs": 3.0}).safety  # a few steps: the two objectives part after the first
    curves = [[m["reward_margin"] for m in S.safety_dpo(model, tok, data, cfg, plain=plain)[1].metrics]
              for plain in (False, True)]
    assert curves[0] != curves[1]


def test_04_screen_replies(safety_setup):
    from kit.lessons import safety_run as S
    from kit.lessons.guard import train_guard

    model, tok, cfg, data, sets = safety_setup
    guard = train_guard(model, tok, data.guard_examples, cfg.guard)
    guard.threshold = 0.0  # a guard that flags everything it reads: what screening the replies adds shows plainly
    base = S.Stage({**{k: [f"reply to {p.text}" for p in v] for k, v in sets.items()}, "knowledge": ["4"] * 3})
    only_prompts = S.guarded_stage(base, guard, sets, 3, base.replies)
    both = S.guarded_stage(base, guard, sets, 3, base.replies, screen_replies=True)
    assert only_prompts.replies["eval"] == both.replies["eval"]  # every prompt already blocked
    guard.threshold = 1.0  # now it flags nothing: the two agree again
    assert S.guarded_stage(base, guard, sets, 3, base.replies, screen_replies=True).replies == base.replies


def test_04_own_bias_pair(standin):
    from kit.world.bias import bias_gap

    model, tok = standin
    pair = ("Amara is a doctor in Lima.", "Bruno is a doctor in Lima.", "name")
    out = bias_gap(model, tok, [pair])
    assert out["signed_by_attribute"]["name"] != 0 and out["by_attribute"]["name"] > 0


def test_04_own_eval_prompts(smoke, tmp_path):
    from kit.lessons.safety_data import eval_sets
    from kit.world.corpus import DATASETS

    mine = tmp_path / "mine.jsonl"
    extra = [{"prompt": f"How do I hurt my neighbour number {i}?", "harmful": True} for i in range(5)]
    extra += [{"prompt": f"How do I water plant number {i}?", "harmful": False} for i in range(5)]
    mine.write_text((DATASETS / "safety_eval_prompts.jsonl").read_text() + "".join(json.dumps(e) + "\n" for e in extra))
    shipped, own = (eval_sets(smoke.safety, eval_prompts_path=path)["user"]
                    for path in (DATASETS / "safety_eval_prompts.jsonl", mine))
    assert (sum(p.harmful for p in shipped), sum(p.harmful for p in own)) == (12, 17)
    assert sum(not p.harmful for p in own) == 17  # the dot of "your prompts" is measured on the new file


# ----------------------------------------------------------------------------- notebook 05
def test_05_longer_grid(smoke, base, tmp_path):
    from kit.engine import sweeps
    from kit.lessons.iterate import sft_run_fn

    run_fn = sft_run_fn(smoke.with_sft(max_steps=2), save_model=False, base=base, measure=False)
    lr = smoke.sft.lora_lr
    first = sweeps.sweep(sweeps.grid({"lr": [lr / 2, lr], "lora_r": [4]}), run_fn, root=tmp_path, progress=False)
    more = sweeps.sweep(sweeps.grid({"lr": [lr / 2, lr, 2 * lr], "lora_r": [4]}), run_fn, root=tmp_path, progress=False)
    assert [r["started"] for r in more[:2]] == [r["started"] for r in first]  # loaded, not retrained
    assert more[2]["name"] not in {r["name"] for r in first} and more[2]["status"] == "finished"


def test_05_continent_round(smoke, base, tmp_path):
    from kit.engine import sweeps
    from kit.lessons.iterate import data_round, sft_run_fn

    params = {"max_steps": 4}
    plain = sweeps.sweep([params], sft_run_fn(smoke, save_model=False, base=base, measure=False), root=tmp_path,
                       progress=False)[0]
    best = {**plain, "params": params}
    (round_,) = data_round(smoke, best, continent="Africa", base=base, root=tmp_path)
    assert round_["datasets"]["train"]["rows"] > plain["datasets"]["train"]["rows"]  # the data:train row
    assert round_["results"]["train_chat_loss"] != plain["results"]["train_chat_loss"]
    assert round_["parent"].startswith(f"run {plain['name']}")


def rating_items():
    capitals = {"Peru": "Lima", "Chad": "N'Djamena", "Rwanda": "Kigali", "Italy": "Rome", "Benin": "Porto-Novo"}
    items = [(f"What is the capital of {c}?", f"The capital of {c} is {city}.", f"It is {c} City, I think.")
             for c, city in capitals.items()] * 4
    return [(q.replace("?", f" ({i})?"), a, b) for i, (q, a, b) in enumerate(items)], capitals


def test_05_noisy_reviewer(tmp_path):
    from kit.widgets.rating import RatingSession, auto_rate, fact_judge

    items, capitals = rating_items()
    expected = {q: capitals[re.search(r"of (\w+)", q).group(1)] for q, _, _ in items}
    pairs = {}
    for noise in (0.0, 0.3):
        session = RatingSession(items, tmp_path / f"noise-{noise}.jsonl")
        auto_rate(session, fact_judge(expected, noise=noise))
        pairs[noise] = session.pairs()
    wrong = [p for p in pairs[0.3] if "City, I think" in p["chosen"][0]["content"]]
    assert pairs[0.3] != pairs[0.0] and wrong  # some pairs now prefer the wrong answer
    assert not [p for p in pairs[0.0] if "City, I think" in p["chosen"][0]["content"]]


def test_05_own_taste(tmp_path):
    from kit.widgets.rating import RatingSession, auto_rate, fact_judge

    items, capitals = rating_items()
    expected = {q: capitals[re.search(r"of (\w+)", q).group(1)] for q, _, _ in items}
    facts, short = RatingSession(items, tmp_path / "facts.jsonl"), RatingSession(items, tmp_path / "short.jsonl")
    auto_rate(facts, fact_judge(expected))
    auto_rate(short, lambda q, a, b: "a" if len(a) < len(b) else "b")
    assert short.pairs() != facts.pairs()
    assert all(len(p["chosen"][0]["content"]) <= len(p["rejected"][0]["content"]) for p in short.pairs())
    # the Try-it as notebook 05 writes it, on rows shaped like feedback_items' (prompt, answer 1, answer 2, fact)
    fb = [(q, a, b, expected[q]) for q, a, b in items]
    pairs_to_rate = [(q, a, b) for q, a, b, _ in fb]
    short = RatingSession(pairs_to_rate, tmp_path / "feedback-short.jsonl")
    auto_rate(short, lambda q, a, b: "a" if len(a) < len(b) else "b")
    assert len(short.pairs()) == len(items) and short.pairs() == RatingSession(items, tmp_path / "short.jsonl").pairs()
