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

from .chat import end_of_turn_ids as end_of_turn_ids
from .vocab import BOS
from .vocab import document_start as document_start

EOS, PAD = "<|eos|>", "<|pad|>"
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


def stop_token_ids(tok) -> list[int]:
    """Tokens that end generation: the end of a document, and the template's end of a chat turn.

    For the kit's tokenizer these are <|eos|> and <|end|>; for a hub tokenizer its EOS token and the
    special tokens its chat template closes an assistant turn with (`<|im_end|>`, `<|eot_id|>`, ...).
    """
    vocab = tok.get_vocab()
    ids = {vocab[t] for t in (EOS, END) if t in vocab}
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return sorted(ids | set(end_of_turn_ids(tok)))


def prepare(tok, *, note=print):
    """Make a loaded tokenizer ready for the kit: a pad token (its EOS when it has none), left padding.

    `note` tells what was changed (print by default; pass `warnings.warn` or `lambda m: None`).
    """
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token: set tok.pad_token = '...' to a "
                             "token it knows before training")
        tok.pad_token = tok.eos_token
        note(f"note: the tokenizer had no pad token; using its EOS token {tok.eos_token!r} for padding "
             "(padding never carries loss)")
    tok.padding_side = "left"  # left padding keeps the last position of every prompt aligned for generation
    return tok


def load_tokenizer(name_or_path, *, note=print):
    """A saved tokenizer (folder or hub id), prepared with `prepare`; a clear error when there is none."""
    from pathlib import Path

    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError, TypeError) as e:
        where = Path(name_or_path)
        raise ValueError(
            f"no usable tokenizer in {name_or_path} ({type(e).__name__}: {str(e).splitlines()[0][:160]}): save it "
            "beside the model with tok.save_pretrained(folder), or pass tokenizer=... to kit.load"
            + (" (the folder has no tokenizer.json or tokenizer_config.json)" if where.is_dir() else "")) from e
    return prepare(tok, note=note)


def encode_documents(tok: PreTrainedTokenizerFast, docs: list[str]) -> list[int]:
    """One long stream of token ids: <|bos|> doc <|eos|> <|bos|> doc <|eos|> ..."""
    bos, eos = tok.bos_token_id, tok.eos_token_id
    out: list[int] = []
    for ids in tok(docs, add_special_tokens=False)["input_ids"]:
        out.append(bos)
        out.extend(ids)
        out.append(eos)
    return out
