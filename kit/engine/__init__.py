"""The engine: generic fine-tuning of any causal LM on any chat data; it knows no country.

models (load any model + tokenizer, LoRA) · tokenizer (BPE training, pad and end-of-turn tokens) ·
chat (format checks, render + loss mask for any template) · data (load, validate, statistics) ·
lines (user files read line by line, safely) · formats (CSV, Hugging Face datasets) · report (the validation
report) · sanitize (safe folder names and spreadsheet cells) ·
packing (rows for SFT) · train (the one loop) · checkpoint · distributed · sft (`finetune`) · dpo ·
evaluation and metrics · stats (intervals and paired tests) · generate · runs (records, sweeps, reports) ·
cache · plots · config.
"""
