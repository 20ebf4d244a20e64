"""Train a byte-level BPE tokenizer and wrap it as a transformers tokenizer with a chat template.

Byte-level means every string round-trips exactly: unknown characters fall back to bytes.
The chat template marks assistant replies with `{% generation %}`, so
`apply_chat_template(..., return_assistant_tokens_mask=True)` tells which tokens the model
should learn to produce (the assistant text and its end-of-turn token).

Example:
    >>> tok = train_tokenizer(["The capital of France is Paris."] * 50, vocab_size=300)
    >>> tok.decode(tok("The capital of France is Paris.")["input_ids"])
    'The capital of France is Paris.'
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
END = "<|end|>"  # end of one chat turn
ROLES = ("system", "user", "assistant")
ROLE_TOKENS = tuple(f"<|{r}|>" for r in ROLES)
SPECIAL_TOKENS = [PAD, BOS, EOS, END, *ROLE_TOKENS]

# A turn is "<|role|>\n" + content + "<|end|>\n". Only the assistant's content and its <|end|>
# sit inside {% generation %}: those are the tokens that carry loss in supervised fine-tuning.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Learn a byte-level BPE vocabulary of `vocab_size` tokens (specials included) from `texts`."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    return wrap(core)


def wrap(core: Tokenizer) -> PreTrainedTokenizerFast:
    """Turn a raw `tokenizers.Tokenizer` into a transformers tokenizer with the kit's specials."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[END, *ROLE_TOKENS],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
    tok.padding_side = "left"  # left padding keeps the last position of every prompt aligned for generation
    return tok


def stop_token_ids(tok: PreTrainedTokenizerFast) -> list[int]:
    """Tokens that end generation: end of document and end of a chat turn."""
    vocab = tok.get_vocab()
    ids = {vocab[t] for t in (EOS, END) if t in vocab}
    if tok.eos_token_id is not None:  # hub tokenizers have their own end token
        ids.add(tok.eos_token_id)
    return sorted(ids)


def encode_documents(tok: PreTrainedTokenizerFast, docs: list[str]) -> list[int]:
    """One long stream of token ids: <|bos|> doc <|eos|> <|bos|> doc <|eos|> ..."""
    bos, eos = tok.bos_token_id, tok.eos_token_id
    out: list[int] = []
    for ids in tok(docs, add_special_tokens=False)["input_ids"]:
        out.append(bos)
        out.extend(ids)
        out.append(eos)
    return out
