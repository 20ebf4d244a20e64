"""GGUF files (llama.cpp's format) de-quantized into an ordinary transformers model folder.

A GGUF file holds a model's weights, usually quantized (4 or 8 bits per weight in blocks with a scale),
its configuration and its tokenizer, all in one file. `convert()` reads one whose architecture is Llama
(Llama, SmolLM, Mistral, TinyLlama, ...), de-quantizes every weight to float32 with the `gguf`
package, and writes a folder that `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer` read
like any other: `config.json`, `model.safetensors`, the tokenizer files and its chat template.

`layers=k` keeps only the first k transformer blocks (with the real embeddings, final norm and
tokenizer): a fast stand-in of the real model for tests, which reads and de-quantizes only what it
keeps. The weights come from the file as they are: a model quantized to 4 bits and de-quantized is a
little worse than the original it was made from.

Example:
    >>> info = convert("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-folder")     # doctest: +SKIP
    >>> info["params"], info["layers"]                                          # doctest: +SKIP
    (134515008, 30)
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from .errors import KitError

# GGUF's names for the weights of one Llama block -> transformers' names inside `model.layers.N.`
BLOCK_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}


class GGUFError(KitError, ValueError):
    """A GGUF file that cannot be converted; the message names the file, the cause and the fix."""


def _reader(path: Path):
    """The file's `GGUFReader`, or a GGUFError that says the file is damaged (or not GGUF at all)."""
    try:
        from gguf import GGUFReader
    except ImportError as e:
        raise GGUFError("reading a GGUF file needs the `gguf` package: pip install gguf (make install does it)") from e
    try:
        return GGUFReader(path)
    except Exception as e:  # a cut-off file gives ValueError, IndexError, struct errors, ...
        raise GGUFError(f"{path} is not a readable GGUF file ({type(e).__name__}: {str(e)[:160]}): the file is "
                        "damaged or cut off; download or install it again") from e


def architecture(reader) -> str:
    field = reader.fields.get("general.architecture")
    return bytes(field.parts[field.data[0]]).decode() if field is not None else "?"


def _unpermute(w, n_head: int):
    """llama.cpp stores q and k with the two halves of each rotary pair interleaved; transformers keeps them
    apart. (out, in) -> (out, in), each head's rows put back in transformers' order."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def _state_dict(reader, config, layers: int) -> dict:
    """{transformers name: float32 tensor} for the embeddings, the first `layers` blocks and the final norm."""
    import numpy as np
    import torch
    from gguf import dequantize

    out = {}
    for t in reader.tensors:
        name = TOP_NAMES.get(t.name)
        if name is None and t.name.startswith("blk."):
            _, index, kind, _ = t.name.split(".", 3)
            if int(index) >= layers or kind not in BLOCK_NAMES:
                continue
            name = f"model.layers.{index}.{BLOCK_NAMES[kind]}.weight"
        if name is None:
            continue
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(reversed(t.shape.tolist())))
        if ".attn_q." in t.name:
            w = _unpermute(w, config.num_attention_heads)
        elif ".attn_k." in t.name:
            w = _unpermute(w, config.num_key_value_heads)
        out[name] = torch.from_numpy(np.ascontiguousarray(w))
    return out


def convert(path: str | Path, folder: str | Path, *, layers: int | None = None) -> dict:
    """De-quantize a Llama-architecture GGUF file into a transformers model folder (float32 safetensors).

    Over 60 lines on purpose: the config, the tensors and the tokenizer are written in one pass over the file.

    Args:
        path: the `.gguf` file.
        folder: where to write the model and its tokenizer (created).
        layers: keep only the first `layers` blocks (None: all of them).

    Returns:
        What was written: `params`, `layers` (kept), `layers_in_file`, `architecture`, `seconds`.

    Raises:
        GGUFError: the file is damaged or not GGUF, its architecture is not Llama, or `layers` is out of range.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    t0, path, folder = time.perf_counter(), Path(path), Path(folder)
    reader = _reader(path)
    arch = architecture(reader)
    if arch != "llama":
        raise GGUFError(f"{path} holds a {arch!r} model; the kit converts Llama-architecture GGUF files only: load "
                        "others with transformers' AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as e:
        raise GGUFError(f"{path}: its settings or tokenizer could not be read ({type(e).__name__}: {str(e)[:160]}): "
                        "the file is damaged; download or install it again") from e
    total = config.num_hidden_layers
    if layers is not None and not (isinstance(layers, int) and 1 <= layers <= total):
        raise GGUFError(f"layers={layers!r}: {path.name} has {total} blocks; keep between 1 and {total}")
    keep = total if layers is None else layers
    config.num_hidden_layers = keep
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = torch.float32
    try:
        state = _state_dict(reader, config, keep)
    except Exception as e:
        raise GGUFError(f"{path}: a weight could not be de-quantized ({type(e).__name__}: {str(e)[:160]}): the file "
                        "is damaged; download or install it again") from e
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every weight comes from the file: no random initialisation first
        model = LlamaForCausalLM(config)
    missing = set(model.state_dict()) - set(state) - ({"lm_head.weight"} if config.tie_word_embeddings else set())
    if missing:
        raise GGUFError(f"{path} lacks {len(missing)} weights the model needs (e.g. {sorted(missing)[0]}): the file is "
                        "damaged or not a Llama model")
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    info = {"architecture": arch, "layers": keep, "layers_in_file": total, "gguf_file": path.name,
            "params": sum(p.numel() for p in model.parameters()), "seconds": round(time.perf_counter() - t0, 1)}
    (folder / "converted.json").write_text(json.dumps(info, indent=1))
    return info
