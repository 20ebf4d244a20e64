"""Test fakes for "any model, any data": hub-style chat templates (none with `{% generation %}`),
tokenizers trained in-process for them (no pad token, as many hub tokenizers ship), and tiny
random models of hub architectures built from configs. Nothing is downloaded."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Each family's template is written here in the style of its family: turn markers, an
# end-of-turn token, and a generation prompt. None marks the assistant's reply for the loss.
FAMILIES = {
    "chatml": dict(
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None, eos="<|endoftext|>",
        template=("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
        end="<|im_end|>"),
    "llama3": dict(
        specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        bos="<|begin_of_text|>", eos="<|end_of_text|>",
        template=("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                  "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
                  "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"),
        end="<|eot_id|>"),
    "gemma": dict(
        specials=["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], bos="<bos>", eos="<eos>",
        template=("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{% set r = 'model' %}"
                  "{% else %}{% set r = 'user' %}{% endif %}<start_of_turn>{{ r }}\n{{ m['content'] | trim }}"
                  "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
        end="<end_of_turn>"),
    "mistral": dict(
        specials=["<s>", "</s>"], bos="<s>", eos="</s>",
        template=("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %} {{ m['content'] }}"
                  "{{ eos_token }}{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %}"
                  "[SYS] {{ m['content'] }} [/SYS]{% endif %}{% endfor %}"),
        end="</s>"),
    "phi3": dict(  # appends its EOS only after the whole conversation, not after each reply
        specials=["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], bos=None,
        eos="<|endoftext|>",
        template=("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
                  "{% if add_generation_prompt %}<|assistant|>\n{% else %}{{ eos_token }}{% endif %}"),
        end="<|end|>"),
}
TEXT = ["The capital of Peru is Lima.", "Santiago is the capital of Chile.", "Hello there, how are you today?",
        "Plural of cat: cats. Plural of box: boxes.", "What is the opposite of hot? Cold."] * 40


def bpe_tokenizer(specials: list[str], bos: str | None, eos: str | None, template: str, vocab_size: int = 400,
                  texts: list[str] = TEXT) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained here on `texts`, with these special tokens and chat template."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=bos, eos_token=eos, chat_template=template,
                                  clean_up_tokenization_spaces=False)


def tokenizer(family: str, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the family's special tokens and chat template, and no pad token."""
    fam = FAMILIES[family]
    tok = bpe_tokenizer(fam["specials"], fam["bos"], fam["eos"], fam["template"], vocab_size)
    assert tok.pad_token is None
    return tok


def tiny_model(arch: str, vocab_size: int, seed: int = 0):
    """A randomly initialised model of a hub architecture, a few thousand parameters."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        GemmaConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        Phi3Config,
        Qwen2Config,
    )

    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, max_position_embeddings=256)
    configs = {
        "llama": lambda: LlamaConfig(**common, num_key_value_heads=2),
        "qwen2": lambda: Qwen2Config(**common, num_key_value_heads=1),
        "gemma": lambda: GemmaConfig(**common, num_key_value_heads=1, head_dim=16),
        "phi3": lambda: Phi3Config(**common, num_key_value_heads=2, pad_token_id=0, bos_token_id=0, eos_token_id=0),
        "gpt2": lambda: GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=256,
                                   bos_token_id=0, eos_token_id=0),
        "gpt_neox": lambda: GPTNeoXConfig(**common),
    }
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(configs[arch]())


ARCHS = ("llama", "qwen2", "gemma", "phi3", "gpt2", "gpt_neox")
