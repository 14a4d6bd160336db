"""GLUS' object contrastive loss with a FIFO token bank.

Anchors are the [SEG] embeddings of this batch (after text_hidden_fcs). A positive is an entry of the same
video and frame from another expression whose sorted object ids are identical; negatives are entries not from
the anchor's (video, expression) and not positives (read literally, the published rule could draw a positive
as a negative too). One positive and `num_negatives` negatives are drawn per anchor; InfoNCE on
cosine similarity with temperature tau. The bank holds detached embeddings of earlier batches.
With `hard_negatives`, negatives from the anchor's own video (other objects, the look-alikes that only the
expression can tell apart) are taken first and random ones fill the rest (an option; the published draw is random).
Under data parallelism every rank adds every rank's anchors (`gather_across_ranks`), so the banks stay equal: the
published code kept one bank per GPU, which also meant that a checkpoint (rank 0's bank) could not resume the others.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F


@dataclass(frozen=True)
class TokenKey:
    video: str
    expression: str
    frame: int
    objects: tuple


class TokenBank:
    def __init__(self, size: int = 512):
        self.size = size
        self.keys: deque = deque(maxlen=size)
        self.embeddings: deque = deque(maxlen=size)

    def add(self, embeddings_ND: torch.Tensor, keys: list[TokenKey]) -> None:
        for e, k in zip(embeddings_ND.detach(), keys):
            self.embeddings.append(e)
            self.keys.append(k)

    def __len__(self) -> int:
        return len(self.keys)

    def state_dict(self) -> dict:
        return {"keys": [(k.video, k.expression, k.frame, list(k.objects)) for k in self.keys],
                "embeddings": torch.stack(list(self.embeddings)) if self.embeddings else torch.empty(0)}

    def load_state_dict(self, state: dict) -> None:
        self.keys.clear()
        self.embeddings.clear()
        keys = [TokenKey(v, e, f, tuple(o)) for v, e, f, o in state["keys"]]
        self.add(state["embeddings"], keys) if keys else None


def object_contrastive_loss(anchors_ND: torch.Tensor, keys: list[TokenKey], bank: TokenBank,
                            num_negatives: int = 128, tau: float = 0.07,
                            generator: torch.Generator | None = None,
                            hard_negatives: bool = False) -> torch.Tensor | None:
    """Mean InfoNCE over the anchors that have >= 1 positive and >= num_negatives negatives; None if none has."""
    pool_keys = list(bank.keys) + list(keys)
    if not pool_keys:
        return None
    pool = torch.cat([torch.stack(list(bank.embeddings)) if len(bank) else anchors_ND.new_zeros(0, anchors_ND.size(1)),
                      anchors_ND.detach()]).to(anchors_ND)
    losses = []
    for i, key in enumerate(keys):
        pos = [j for j, k in enumerate(pool_keys) if k.video == key.video and k.frame == key.frame
               and k.expression != key.expression and k.objects == key.objects]
        same = set(pos)
        neg = [j for j, k in enumerate(pool_keys)
               if (k.video, k.expression) != (key.video, key.expression) and j not in same]
        if not pos or len(neg) < num_negatives:
            continue
        p = pos[int(torch.randint(len(pos), (1,), generator=generator))]
        n = torch.tensor(neg)[torch.randperm(len(neg), generator=generator)]
        if hard_negatives:  # stable sort: same-video entries first, each group still in random order
            n = n[torch.argsort(torch.tensor([pool_keys[j].video != key.video for j in n.tolist()]), stable=True)]
        n = n[:num_negatives]
        candidates = F.normalize(torch.cat([pool[p:p + 1], pool[n]]), dim=-1)
        logits = candidates @ F.normalize(anchors_ND[i], dim=-1) / tau
        losses.append(F.cross_entropy(logits[None], logits.new_zeros(1, dtype=torch.long)))
    return torch.stack(losses).mean() if losses else None


def gather_across_ranks(embeddings_ND: torch.Tensor, keys: list[TokenKey]) -> tuple[torch.Tensor, list[TokenKey]]:
    """Every rank's (detached embeddings, keys), concatenated in rank order; the input itself on one process.
    A collective: every rank must call it at every step, with or without entries of its own."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embeddings_ND.detach(), keys
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (embeddings_ND.detach().cpu(), keys))  # counts differ between ranks
    return torch.cat([e for e, _ in parts]).to(embeddings_ND.device), [k for _, ks in parts for k in ks]
