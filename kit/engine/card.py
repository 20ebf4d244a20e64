"""What a saved model carries so that it works outside the kit: a generation config that stops at the
end of a turn, and a model card (README.md) with where it came from and what was measured.

Example:
    >>> text = card_text({"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "lora": True,
    ...                   "exact_match_before": 0.1, "exact_match_after": 0.5, "exact_match_change": [0.4, 0.2, 0.6]})
    >>> "library_name: peft" in text and "0.100 -> 0.500" in text
    True
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "fine-tuning-kit"
FIGURES = (("eval_loss", "loss on the evaluation replies"), ("exact_match", "exact match"),
           ("token_f1", "token F1"), ("rouge_l", "ROUGE-L"))


def kit_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def data_fingerprint(examples: list[dict]) -> str:
    """sha256 of the training examples (the kit's form, bookkeeping keys left out), 16 hex digits."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps({k: v for k, v in ex.items() if not k.startswith("_")}, sort_keys=True,
                            ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()[:16]


def stop_generation_at_turn_end(model, tok) -> list[int]:
    """Set the model's `generation_config` so that plain `model.generate` stops at the end of a reply: its
    eos_token_id becomes the template's end-of-turn token(s) and the tokenizer's EOS, its pad_token_id the
    tokenizer's pad. Returns the eos ids."""
    from .tokenizer import end_of_turn_ids

    ids = list(dict.fromkeys([*end_of_turn_ids(tok), *([tok.eos_token_id] if tok.eos_token_id is not None else [])]))
    targets = [model, getattr(model, "base_model", None), getattr(getattr(model, "base_model", None), "model", None)]
    for m in targets:
        gc = getattr(m, "generation_config", None)
        if gc is not None and ids:
            gc.eos_token_id = ids if len(ids) > 1 else ids[0]
            if tok.pad_token_id is not None:
                gc.pad_token_id = tok.pad_token_id
    return ids


def _figure(info: dict, key: str) -> str | None:
    before, after = info.get(f"{key}_before"), info.get(f"{key}_after")
    if before is None or after is None:
        return None
    text = f"{before:.3f} -> {after:.3f}"
    if key == "exact_match" and info.get("exact_match_change"):
        d, lo, hi = info["exact_match_change"]
        text += f" (change {d:+.3f}, 95% interval [{lo:+.3f}, {hi:+.3f}], paired bootstrap)"
    return text


def card_text(info: dict) -> str:
    """The model card of a fine-tuned model: YAML metadata (base model, library, tags) and what was measured."""
    base = info.get("base_model") or "unknown"
    library = "peft" if info.get("lora") else "transformers"
    meta = ["---", f"library_name: {library}", *([f"base_model: {base}"] if base != "unknown" else []),
            "tags:", "- fine-tuning-kit", "- sft", "---"]
    rows = [f"| {label} | {fig} |" for key, label in FIGURES if (fig := _figure(info, key)) is not None]
    lines = [*meta, "", f"# {Path(str(info.get('name') or 'fine-tuned model')).name}", "",
             f"Fine-tuned from `{base}` with the fine-tuning kit ({DISTRIBUTION} {kit_version()}), "
             f"{'LoRA adapters' if info.get('lora') else 'every weight'}.", "",
             "## Training", "",
             f"- data: {info.get('train_examples', '?')} examples, fingerprint `{info.get('data_fingerprint', '?')}` "
             "(sha256 of the examples, first 16 hex digits)",
             f"- epochs {info.get('epochs', '?')}, learning rate {info.get('lr', '?')}, "
             f"{info.get('steps', '?')} optimizer steps, {info.get('loss_tokens', '?')} tokens with loss", ""]
    if rows:
        lines += ["## Measured", "", f"On {info.get('eval_examples', '?')} held-out examples, before -> after "
                  "fine-tuning (greedy replies):", "", "| figure | before -> after |", "|---|---|", *rows, ""]
    lines += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "model = AutoModelForCausalLM.from_pretrained(FOLDER)" if not info.get("lora") else
              "model = AutoModelForCausalLM.from_pretrained(FOLDER + '/merged')  # or peft's AutoPeftModel on FOLDER",
              "tok = AutoTokenizer.from_pretrained(FOLDER)", "```", "",
              "`generation_config.eos_token_id` holds the end-of-turn token: plain `model.generate` stops at the "
              "end of a reply.", ""]
    return "\n".join(lines)


def write_card(folder: str | Path, info: dict) -> Path:
    """Write `folder/README.md` (a `huggingface_hub.ModelCard`, whose metadata the hub reads)."""
    from huggingface_hub import ModelCard

    path = Path(folder) / "README.md"
    ModelCard(card_text(info)).save(path)
    return path


def push_to_hub(folder: str | Path, repo: str, private: bool = True) -> str:
    """Upload a saved model folder to the Hugging Face Hub (needs a network and a login); returns its URL."""
    from huggingface_hub import create_repo, upload_folder

    create_repo(repo, private=private, exist_ok=True)
    upload_folder(folder_path=str(folder), repo_id=repo)
    return f"https://huggingface.co/{repo}"
