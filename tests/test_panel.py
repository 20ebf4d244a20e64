"""The control panel on any model and data (the course's mode is tested in test_sft.py)."""

from pathlib import Path

import pytest
from tiny_hub import save_tiny_qwen2

from kit.engine.config import SFTConfig
from kit.engine.data import load_jsonl
from kit.engine.models import load
from kit.widgets.panel import SFTPanel

DATASETS = Path(__file__).resolve().parent.parent / "datasets"


@pytest.fixture(scope="module")
def word_tasks():
    train, evals = (load_jsonl(DATASETS / f"word_tasks_{split}.jsonl")[0] for split in ("train", "eval"))
    return train[:48], evals[:8]


def test_panel_trains_any_model_without_saving(tmp_path, word_tasks):
    train, evals = word_tasks
    folder = save_tiny_qwen2(tmp_path / "qwen", [m["content"] for ex in train for m in ex["messages"]], hidden=32)
    model, tok = load(str(folder))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    panel = SFTPanel(model=model, tokenizer=tok, train=train, eval=evals, out_dir=None,
                     config=SFTConfig(epochs=1, batch_size=2, seq_len=64, lora=True, lora_r=4))
    box = panel.widget()
    assert "replay" not in box.controls and "lora" in box.controls  # replay mixes in the course's corpus only
    box.controls["lora"].value = False
    result = panel.wait()  # nobody pressed Start: it runs now
    assert result.path is None and panel.out_dir is None and not list(tmp_path.glob("runs*"))
    assert result.info["lora"] is False and result.info["steps"] >= 1
    assert {"eval_loss_before", "eval_loss_after", "exact_match_after"} <= set(result.info)
    assert all(model.state_dict()[k].equal(v) for k, v in before.items())  # the panel trained a copy
    assert [s["prompt"] for s in result.samples] == [ex["messages"][0]["content"] for ex in evals]
