import pytest
import torch

from kit.engine.models import PRESETS, count_params, load


@pytest.mark.parametrize("preset,low,high", [("smoke", 0.1e6, 0.5e6), ("classroom", 2e6, 10e6),
                                             ("gpu", 50e6, 150e6)])
def test_presets_have_the_stated_sizes(preset, low, high):
    vocab = {"smoke": 768, "classroom": 2048, "gpu": 8192}[preset]
    with torch.device("meta"):  # shapes only: no memory, no time
        model, _ = load(preset, vocab_size=vocab)
    assert low <= count_params(model) <= high


def test_unknown_name_lists_presets():
    with pytest.raises(ValueError) as e:
        load("nope")
    for name in PRESETS:
        assert name in str(e.value)


def test_folder_without_config_is_explained(tmp_path):
    with pytest.raises(ValueError, match="save_pretrained"):
        load(str(tmp_path))


def test_save_and_load_folder_gives_same_outputs(tmp_path, tok):
    model, _ = load("smoke", tokenizer=tok, seed=3)
    model.save_pretrained(tmp_path / "m")
    again, _ = load(str(tmp_path / "m"), tokenizer=tok)
    x = torch.tensor([[tok.bos_token_id, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(model(x).logits, again(x).logits)
    assert again.config.pad_token_id == tok.pad_token_id


def test_seed_fixes_initialisation(tok):
    a, b = load("smoke", tokenizer=tok, seed=1).model, load("smoke", tokenizer=tok, seed=1).model
    c = load("smoke", tokenizer=tok, seed=2).model
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


@pytest.mark.parametrize("files,words", [
    ({"config.json": "{\"model_type\": "}, r"config.json is broken \(JSONDecodeError"),
    ({"config.json": "[1]"}, "config.json is broken"),
    ({"config.json": "{\"model_type\": \"zzz\"}"}, r"names a model type transformers does not know \('zzz'\)"),
    ({"config.json": "{\"model_type\": \"llama\"}"}, "has a config.json but no weights"),
    ({"config.json": "{\"model_type\": \"llama\"}", "model.safetensors": "garbage" * 50},
     "the weights in .* \\(model.safetensors\\) could not be read"),
    ({"adapter_config.json": "{}"}, "holds no config.json.*LoRA adapter"),
])
def test_broken_model_folders_name_the_file_and_the_fix(tmp_path, files, words):
    from kit.engine.models import ModelLoadError

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ModelLoadError, match=words):
        load(str(tmp_path))


@pytest.mark.parametrize("name", ["./no-such-model", "models/a/b", "~/no-such-model-here", "../nope"])
def test_a_path_that_does_not_exist_is_no_such_folder(name):
    with pytest.raises(ValueError, match="no such folder") as e:
        load(name)
    assert "hub" not in str(e.value).split("(")[0]


def test_a_file_or_an_empty_name_is_refused(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file, not a model folder"):
        load(str(tmp_path / "weights.bin"))
    with pytest.raises(ValueError, match="no model named"):
        load("")
