"""`glus study motion-probe`: can the tiny GLUS' language model pick an object by its motion, given ideal visual tokens?

The embedded default's motion-only expressions ("the object that stops") stay at the blank-text control's J&F
(docs/embedded_default.md, "The paper's ablation, measured"). Two places can fail: the vision side (pooled CLIP tokens that do
not say clearly where an object is) or the language model (relating the same object across frames, then
finding the one whose motion the text names). This probe removes the first: the synthetic generator's own scenes
(`make_scene`, the frames GLUS reads: 4 context frames spread over the clip, 4 consecutive query frames) become
one token per visible object per frame carrying its exact colour, shape and centre, a frame delimiter after each
frame, then the motion word and a [SEG]; the tiny LLaMA of `tiny_llama_config` (the default's shapes, or wider /
deeper) must name the colour and shape of the one object the motion fits (`fitting_motions`), from the [SEG]'s
last hidden state. Options a model could use: a learned frame-index embedding on the visual tokens, and a
dense auxiliary target (each object token names its object's motion).

It reports held-out accuracy against chance: picking one of the visible objects' colour+shape at random (a
look-alike pair shares one, so chance is well above 1/18). Accuracy at chance means the language model, not the
vision tower, is what keeps motion out of reach.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from glus.data.synth.language import fitting_motions
from glus.data.samplers import query_frames, train_context_frames
from glus.data.synth.scene import MOTIONS, make_scene
from glus.vocabulary import COLOURS, SHAPES

WIDTH, HEIGHT = 160, 120  # the generator's frame size (glus.data.synth.writer)
COLOUR_NAMES = list(COLOURS)
NUM_CLASSES = len(COLOURS) * len(SHAPES)
OBJECT, DELIMITER, MOTION, SEG = range(4)  # token kinds
# a token row: kind, colour, shape, x, y (in [-1, 1]), frame, motion (the word's; an object's own for `aux`)
ROW = 7
SIMPLE_MOTIONS = MOTIONS[:5]  # left, right, up, down, still: no speeding, stopping, entering, leaving


@dataclass
class ProbeConfig:
    steps: int = 5000
    seed: int = 0
    layers: int = 2
    width: int = 64
    frame_embedding: bool = False
    aux: bool = False
    simple: bool = False     # scenes whose objects all have one of SIMPLE_MOTIONS
    temporal: int = 0        # bidirectional encoder layers over the visual tokens before the LLaMA
    aux_at: str = "llm"      # where the dense target is read: the LLM's last states, or "visual": the LLM's inputs
    batch: int = 16
    lr: float = 1e-3
    eval_every: int = 1000
    eval_samples: int = 500


def object_class(o) -> int:
    return COLOUR_NAMES.index(o.colour) * len(SHAPES) + SHAPES.index(o.shape)


def probe_frames(num_frames: int, rng: np.random.Generator) -> list[int]:
    """The frames of a GLUS training clip, drawn by the training samplers: 4 context frames (one from each of 4
    segments) and 4 consecutive query frames."""
    return train_context_frames(num_frames, 4, rng) + query_frames(num_frames, 4, rng)


def draw_sample(rng: np.random.Generator, simple: bool = False) -> tuple[np.ndarray, int, set[int]]:
    """(token rows (L, ROW), target class, the classes visible in some frame) of one motion-only query whose
    motion fits exactly one object of the scene (as the generator writes motion-only expressions)."""
    while True:
        num_frames = int(rng.integers(12, 21))
        objects = [o for o in make_scene(rng, WIDTH, HEIGHT, num_frames).objects if o.colour in COLOURS]
        motion = str(rng.choice(SIMPLE_MOTIONS if simple else MOTIONS))
        if simple and any(o.motion not in SIMPLE_MOTIONS for o in objects):
            continue
        fit = [o for o in objects if motion in fitting_motions(o)]
        if len(fit) == 1:
            break
    rows, visible = [], set()
    for f, t in enumerate(probe_frames(num_frames, rng)):
        for o in objects:
            x, y = o.centres[t]
            if -o.radius < x < WIDTH + o.radius and -o.radius < y < HEIGHT + o.radius:
                rows.append((OBJECT, COLOUR_NAMES.index(o.colour), SHAPES.index(o.shape), x / WIDTH * 2 - 1,
                             y / HEIGHT * 2 - 1, f, MOTIONS.index(o.motion)))
                visible.add(object_class(o))
        rows.append((DELIMITER, 0, 0, 0.0, 0.0, f, 0))
    rows += [(MOTION, 0, 0, 0.0, 0.0, 0, MOTIONS.index(motion)), (SEG, 0, 0, 0.0, 0.0, 0, 0)]
    return np.asarray(rows, dtype=np.float32), object_class(fit[0]), visible


def chance_accuracy(samples) -> float:
    """The expected accuracy of naming a random visible object's class (the target counts if it was visible)."""
    return float(np.mean([(target in visible) / len(visible) for _, target, visible in samples]))


def collate(samples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded (B, L, ROW) rows, (B, L) attention mask, (B,) targets: the [SEG] is every sequence's last."""
    length = max(len(rows) for rows, _, _ in samples)
    batch = np.zeros((len(samples), length, ROW), np.float32)
    mask = np.zeros((len(samples), length), np.int64)
    for i, (rows, _, _) in enumerate(samples):
        batch[i, length - len(rows):], mask[i, length - len(rows):] = rows, 1
    return torch.from_numpy(batch), torch.from_numpy(mask), torch.tensor([t for _, t, _ in samples])


class MotionProbe(nn.Module):
    """Object tokens (colour + shape embeddings + a linear code of the centre) into the tiny GLUS' LLaMA."""

    def __init__(self, cfg: ProbeConfig):
        from transformers import LlamaModel

        from glus.model.build.tiny import tiny_llama_config

        super().__init__()
        d, self.cfg = cfg.width, cfg
        self.colour, self.shape = nn.Embedding(len(COLOURS), d), nn.Embedding(len(SHAPES), d)
        self.position, self.kind = nn.Linear(2, d), nn.Embedding(4, d)
        self.motion, self.frame = nn.Embedding(len(MOTIONS), d), nn.Embedding(8, d)
        self.lm = LlamaModel(tiny_llama_config(8, hidden_size=d, intermediate_size=2 * d,
                                               num_hidden_layers=cfg.layers))
        self.head, self.aux_head = nn.Linear(d, NUM_CLASSES), nn.Linear(d, len(MOTIONS))
        self.temporal = None
        if cfg.temporal:  # a video projector: the visual tokens of all frames see each other, then the LLM reads them
            layer = nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=2 * d, dropout=0.0, batch_first=True,
                                               norm_first=True)
            self.temporal = nn.TransformerEncoder(layer, cfg.temporal, enable_nested_tensor=False)
            self.temporal_frame = nn.Embedding(8, d)

    def forward(self, rows: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(class logits at the [SEG], the auxiliary loss or None)."""
        kind, colour, shape, frame, motion = (rows[..., i].long() for i in (0, 1, 2, 5, 6))
        is_object, is_word = (kind == OBJECT).unsqueeze(-1), (kind == MOTION).unsqueeze(-1)
        x = self.kind(kind) + is_object * (self.colour(colour) + self.shape(shape) + self.position(rows[..., 3:5]))
        x = x + is_word * self.motion(motion)  # an object row's own motion is the aux target, never an input
        if self.cfg.frame_embedding:
            x = x + (kind <= DELIMITER).unsqueeze(-1) * self.frame(frame)
        if self.temporal is not None:
            visual = (kind <= DELIMITER) & (mask > 0)
            encoded = self.temporal(x + self.temporal_frame(frame), src_key_padding_mask=~visual)
            x = torch.where(visual.unsqueeze(-1), encoded, x)
        hidden = self.lm(inputs_embeds=x * mask.unsqueeze(-1), attention_mask=mask).last_hidden_state
        aux = None
        if self.cfg.aux:
            objects = (kind == OBJECT) & (mask > 0)
            read = x if self.cfg.aux_at == "visual" else hidden
            aux = nn.functional.cross_entropy(self.aux_head(read[objects]), motion[objects])
        return self.head(hidden[:, -1]), aux


def accuracy(model: MotionProbe, test) -> float:
    with torch.no_grad():
        rows, mask, targets = test
        return float((model(rows, mask)[0].argmax(1) == targets).float().mean())


def run_probe(cfg: ProbeConfig, out: str | Path | None = None, progress: bool = True) -> dict:
    """Trains the probe and returns (and writes to OUT as JSON) its accuracy curve and chance. Held-out scenes
    come from another seed range than the training scenes."""
    from tqdm import tqdm

    from glus.io import atomic_write_json

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    held_out = [draw_sample(np.random.default_rng(1_000_000 + i), cfg.simple) for i in range(cfg.eval_samples)]
    test = collate(held_out)
    model = MotionProbe(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), cfg.lr)
    curve = []
    bar = tqdm(range(1, cfg.steps + 1), desc="motion probe", disable=not progress)
    for step in bar:
        rows, mask, targets = collate([draw_sample(rng, cfg.simple) for _ in range(cfg.batch)])
        logits, aux = model(rows, mask)
        loss = nn.functional.cross_entropy(logits, targets) + (aux if aux is not None else 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            curve.append({"step": step, "loss": float(loss.detach()), "accuracy": accuracy(model, test)})
            bar.set_postfix(accuracy=f"{curve[-1]['accuracy']:.3f}")
    report = {"config": asdict(cfg), "chance": chance_accuracy(held_out), "curve": curve}
    if out is not None:
        atomic_write_json(out, report)
    return report
