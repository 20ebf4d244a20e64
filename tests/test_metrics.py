import math

import torch

from kit.engine.config import ModelConfig
from kit.engine.metrics import Perplexity, first_clause, perplexity
from kit.engine.models import create
from kit.engine.train import TokenRows
from kit.world.probes import FactCloze


def test_first_clause():
    assert first_clause(" Paris. It is big") == "Paris"
    assert first_clause(" Buenos Aires\nmore") == "Buenos Aires"
    assert first_clause(" Washington D.C.") == "Washington D.C"


def test_fact_cloze_exact_match():
    out = FactCloze().compute(
        predictions=[" Paris.", " Parisian city", "Rome", " Washington D", " Washington D.C. is", " Lima"],
        references=["Paris", "Paris", "Madrid", "Washington D.C.", "Washington D.C.", "Lima"])
    assert out == {"accuracy": 0.5, "correct": 3, "total": 6}


def test_perplexity_metric_is_exp_mean_loss():
    out = Perplexity().compute(loss_sums=[2.0, 4.0], token_counts=[2, 4])
    assert math.isclose(out["perplexity"], math.e) and math.isclose(out["mean_loss"], 1.0)


def test_untrained_model_perplexity_near_vocab_size():
    model = create(ModelConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=2, intermediate_size=64,
                               max_seq_len=64), vocab_size=50, seed=0)
    ppl = perplexity(model, TokenRows(torch.randint(0, 50, (2000,)), 16))["perplexity"]
    assert 30 < ppl < 80
