"""A tiny random model of a hub architecture, saved like a hub download: no kit template, no pad token.

Tests (and the notebook smoke run) use it to stand for "a model of the learner's choice": a Qwen2
with a byte-level BPE tokenizer trained here in a second, and a ChatML chat template written the
way hub models write theirs (no `{% generation %}` marks), EOS `<|im_end|>` and no pad token.
"""

from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def chatml_tokenizer(texts: list[str], vocab_size: int = 600):
    """A byte-level BPE tokenizer trained on `texts`, with a ChatML template, EOS `<|im_end|>` and no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", unk_token=None)
    tok.chat_template = CHATML
    assert tok.pad_token is None
    return tok


def save_tiny_qwen2(folder: str | Path, texts: list[str], hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Save a random tiny Qwen2 and its ChatML tokenizer (trained on `texts`) to `folder`; return it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = chatml_tokenizer(texts)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         eos_token_id=tok.eos_token_id, bos_token_id=None, pad_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    folder = Path(folder)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    # Loading picks Qwen2's tokenizer class (from config.json), whose default pad token is <|endoftext|>;
    # many hub models (Llama 3, Mistral) ship none, and that is the case to test: say so explicitly.
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**settings, "pad_token": None}, indent=1))
    return folder
