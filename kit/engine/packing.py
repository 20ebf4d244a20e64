"""Chat examples as training rows: packing, per-conversation positions, a block-diagonal mask.

Packing puts several short conversations into one row of `seq_len` tokens, so no compute is
spent on padding. Each conversation keeps its own positions (0, 1, 2, ...) and a block-diagonal
causal mask stops it from attending to its neighbours: the model sees exactly what it would see
if the conversation were alone. Only tokens inside the loss mask of `kit.engine.chat.render` (the
assistant's replies and their end-of-turn token) are labels; the rest is IGNORE.

Example:
    >>> rows = PackedChat.from_examples(examples, tok, seq_len=128)   # doctest: +SKIP
    >>> batch = rows.collate([rows[0], rows[1]])                       # doctest: +SKIP
    >>> batch["attention_mask"].shape                                  # doctest: +SKIP
    torch.Size([2, 1, 128, 128])
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from .chat import Rendered
from .data import sft_rows
from .losses import IGNORE
from .tokenizer import document_start


def labels_for(r: Rendered) -> list[int]:
    """Next-token labels of one rendered conversation: ids[i+1] where the mask says learn it, else IGNORE."""
    nxt = r.input_ids[1:]
    return [t if m else IGNORE for t, m in zip(nxt, r.loss_mask[1:])] + [IGNORE]


class PackedChat:
    """Rendered conversations packed greedily into rows of `seq_len` tokens (first fit, seeded order).

    `kinds` (optional, one per conversation) says where each came from: 0 chat, 1 replay document,
    2 a "focus" chat whose first reply token weighs `first_token_weight` (e.g. help-or-refuse examples);
    `collate` then adds a per-token `kind` tensor so a loss can be split by kind (`kit.engine.losses.KindLoss`).
    """

    def __init__(self, rendered: list[Rendered], seq_len: int, pad_id: int, seed: int = 0,
                 kinds: list[int] | None = None):
        order = list(range(len(rendered)))
        random.Random(seed).shuffle(order)
        kinds = kinds or [0] * len(rendered)
        self.seq_len, self.pad_id = seq_len, pad_id
        self.rows: list[list[Rendered]] = []
        self.row_kinds: list[list[int]] = []  # the kind of each conversation in each row
        room: list[int] = []
        for i in order:
            r = rendered[i]
            n = min(len(r.input_ids), seq_len)
            for k, left in enumerate(room):
                if n <= left:
                    self.rows[k].append(r)
                    self.row_kinds[k].append(kinds[i])
                    room[k] -= n
                    break
            else:
                self.rows.append([r])
                self.row_kinds.append([kinds[i]])
                room.append(seq_len - n)
        self.n_examples = len(rendered)
        self.dropped: list = []
        self.first_token_weight, self.weighted_kind = 1.0, 0

    @classmethod
    def from_examples(cls, examples: list[dict], tok, seq_len: int, seed: int = 0,
                      replay_docs: Sequence[str] = (), first_token_weight: float = 1.0,
                      focus_examples: Sequence[dict] = ()) -> PackedChat:
        """Render (chat template + loss mask) and pack; rows with no loss token are dropped and counted.

        `replay_docs` are plain documents packed beside the chats, every token learned: "replay"
        keeps the model practising the text it was pre-trained on. Their tokens have kind 1.
        """
        rendered, dropped = sft_rows(examples, tok, seq_len)
        kinds = [0] * len(rendered)
        if focus_examples:  # kind 2: chats whose first reply token gets `first_token_weight`
            focus, dropped_focus = sft_rows(list(focus_examples), tok, seq_len)
            rendered, kinds, dropped = rendered + focus, kinds + [2] * len(focus), dropped + dropped_focus
        for ids in tok(list(replay_docs), add_special_tokens=False)["input_ids"] if replay_docs else []:
            doc = [*document_start(tok), *ids, tok.eos_token_id][:seq_len]
            rendered.append(Rendered(doc, [0] + [1] * (len(doc) - 1), len(doc) - 1, 0, 0))
            kinds.append(1)
        packed = cls(rendered, seq_len, tok.pad_token_id, seed, kinds)
        packed.first_token_weight = first_token_weight
        packed.weighted_kind = 2 if focus_examples else 0
        packed.dropped = dropped
        return packed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids, labels, pos, seg, kind = [], [], [], [], []
        for s, (r, k) in enumerate(zip(self.rows[i], self.row_kinds[i])):
            n = min(len(r.input_ids), self.seq_len)
            ids += r.input_ids[:n]
            labels += labels_for(r)[:n - 1] + [IGNORE]  # the last token never predicts across a boundary
            pos += range(n)
            seg += [s] * n
            kind += [k] * n
        pad = self.seq_len - len(ids)
        ids += [self.pad_id] * pad
        labels += [IGNORE] * pad
        pos += [0] * pad
        seg += [-1 - k for k in range(pad)]  # each padding token is its own segment: it attends only itself
        kind += [0] * pad
        if self.first_token_weight != 1.0:  # the first token of each reply: where the model decides how to answer
            weights = [self.first_token_weight if lab != IGNORE and kind[j] == self.weighted_kind
                       and (j == 0 or labels[j - 1] == IGNORE) else 1.0 for j, lab in enumerate(labels)]
            extra = {"weights": torch.tensor(weights)}
        else:
            extra = {}
        return {**extra, "input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "position_ids": torch.tensor(pos), "segments": torch.tensor(seg), "kind": torch.tensor(kind)}

    @staticmethod
    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        seg = torch.stack([it["segments"] for it in items])  # (B, T)
        T = seg.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T)
        same = seg[:, :, None] == seg[:, None, :]  # (B, T, T)
        return {"input_ids": torch.stack([it["input_ids"] for it in items]),
                "labels": torch.stack([it["labels"] for it in items]),
                "position_ids": torch.stack([it["position_ids"] for it in items]),
                "kind": torch.stack([it["kind"] for it in items]),  # (B, T): 0 chat, 1 replay, 2 focus chat
                "attention_mask": (same & causal)[:, None],  # (B, 1, T, T), True = may attend
                **({"weights": torch.stack([it["weights"] for it in items])} if "weights" in items[0] else {})}

    def kinds(self, i: int) -> torch.Tensor:
        """Per-token kind of row i (0: chat, 1: replay), aligned with its labels."""
        return self[i]["kind"]

    def loss_tokens(self, kind: int | None = 0) -> int:
        """Tokens that carry loss over all rows (one epoch), of one kind (0: chat, with 2: focus chats; None: all)."""
        return sum(sum(1 for t in labels_for(r)[:min(len(r.input_ids), self.seq_len) - 1] if t != IGNORE)
                   for row, kinds in zip(self.rows, self.row_kinds) for r, k in zip(row, kinds)
                   if kind is None or k == kind or (kind == 0 and k == 2))

    def fill_rate(self) -> float:
        """Share of row tokens that are real (not padding)."""
        real = sum(min(len(r.input_ids), self.seq_len) for row in self.rows for r in row)
        return real / max(1, len(self.rows) * self.seq_len)
