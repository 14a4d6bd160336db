"""The key-frame selector (GLUS supplementary B.4): a multimodal LM answers with a [SCORE] token; an MLP head on
the last-layer hidden state that predicts [SCORE] gives the target frame's score (trained against the per-frame
IoU pseudo-labels of an early GLUS; at inference the key frame of an expression is its best-scored frame).

One prompt scores one target frame of one expression, seen among `num_reference` reference frames of the video:

    [BOS] SYSTEM USER: <ref> x num_reference\\nREFERENCE_LINE\\n<target>\\nQUESTION ASSISTANT: ANSWER</s>

Every image is <im_start> + K image slots + <im_end>, as in `glus.model.mllm.prompt`. The prefix (up to and with
the reference line) depends neither on the expression nor on the target, so inference computes its KV cache
once per video (`glus.infer.selector`).

The published selector (GLUS-video/GLUS kfs/, on Chat-UniVi) asks about several frames in one turn and answers
one [SCORE] per frame; here every prompt is the paper's form, 8 reference frames + 1 target frame, one [SCORE].
Its head has no sigmoid (as published): the score regresses the IoU directly.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModel

from glus.model.errors import CheckpointError
from glus.model.losses import ce_loss, label_positions
from glus.model.mllm import MultimodalLM, VisionLanguageConfig, build_tiny_tokenizer
from glus.model.mllm.lora import apply_lora, set_lm_trainables
from glus.model.mllm.prompt import IGNORE_INDEX, clean_expression, pad_right, with_article
from glus.model.mllm.templates import LLAVA_V1_SYSTEM
from glus.model.mllm.tokenizer import IM_END, IM_START, IMAGE_TOKEN_INDEX

SCORE_TOKEN = "[SCORE]"
SCORE_LOSSES = ("l1", "l2")  # l1: the published code; l2: the paper's text


def add_score_token(tokenizer) -> int:
    """Add [SCORE] as a special token where missing; its id. (The caller resizes the embeddings when it is new.)"""
    if SCORE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([SCORE_TOKEN], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(SCORE_TOKEN)


# ---- prompt --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScoreTemplates:
    system: str
    reference_line: str             # after the reference frames, before the target frame
    questions: tuple[str, ...]      # "{exp}": the cleaned expression, with its article; one drawn per sample
    answers: tuple[str, ...]        # each holds exactly one [SCORE]
    inference_question: str
    inference_answer: str           # its text before [SCORE] is forced at inference


SCORE_TEMPLATES = {
    # ours (the published Chat-UniVi prompt asks about all frames at once, see the module docstring)
    "readable": ScoreTemplates(
        system=LLAVA_V1_SYSTEM,
        reference_line="These are reference frames of a video. The question below is about the next frame.",
        questions=("How well can {exp} be segmented in this frame?",
                   "Rate how clearly {exp} can be seen and segmented in this frame.",
                   "Give a score for segmenting {exp} in this frame."),
        answers=("The score is [SCORE].", "Sure, the score is [SCORE].", "[SCORE]."),
        inference_question="How well can {exp} be segmented in this frame?",
        inference_answer="The score is [SCORE].",
    ),
}


@dataclass
class ScorePromptBatch:
    input_ids: torch.Tensor       # (E, L) right-padded
    attention_mask: torch.Tensor  # (E, L)
    labels: torch.Tensor          # (E, L), IGNORE_INDEX where no loss
    score_positions: torch.Tensor  # (E,) index of the [SCORE] token

    def to(self, device) -> "ScorePromptBatch":
        return ScorePromptBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels,
                                                         self.score_positions)))


class ScorePromptBuilder:
    def __init__(self, tokenizer, tokens_per_frame: int, num_reference: int = 8, template: str = "readable"):
        if template not in SCORE_TEMPLATES:
            raise ValueError(f"unknown selector prompt template {template!r}: one of {sorted(SCORE_TEMPLATES)}")
        self.tok, self.k, self.num_reference = tokenizer, tokens_per_frame, num_reference
        self.templates = SCORE_TEMPLATES[template]
        ids = tokenizer.convert_tokens_to_ids([IM_START, IM_END, SCORE_TOKEN])
        if tokenizer.unk_token_id in ids or None in ids:
            raise ValueError("the tokenizer lacks <im_start>, <im_end> or [SCORE]: call add_glus_tokens and "
                             "add_score_token first")
        self.im_start_id, self.im_end_id, self.score_id = ids

    def _text(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def _image(self) -> list[int]:
        return [self.im_start_id, *[IMAGE_TOKEN_INDEX] * self.k, self.im_end_id]

    @staticmethod
    def _expression(expression: str) -> str:
        exp = clean_expression(expression)
        if not exp:
            raise ValueError("empty expression")
        return with_article(exp)

    def prefix(self) -> list[int]:
        """System, "USER: ", the reference frames and the reference line: the same for every prompt of a video."""
        ids = [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []
        ids += self._text(self.templates.system + " ") + self._text("USER: ")
        for _ in range(self.num_reference):
            ids += self._image()
        return ids + self._text("\n" + self.templates.reference_line + "\n")

    def build(self, expression: str, rng: np.random.Generator | None = None) -> dict:
        """Token ids and labels of one prompt. With rng the question and answer are drawn (training); without,
        they are the inference ones. Labels: the whole answer (LISA's CE), [SCORE] and </s> included."""
        t, exp = self.templates, self._expression(expression)
        question, answer = t.inference_question, t.inference_answer
        if rng is not None:
            question = t.questions[int(rng.integers(len(t.questions)))]
            answer = t.answers[int(rng.integers(len(t.answers)))]
        prefix = self.prefix()
        user = self._image() + self._text("\n" + question.format(exp=exp) + " ASSISTANT: ")
        answer_ids = self._text(answer) + [self.tok.eos_token_id]
        if answer_ids.count(self.score_id) != 1:
            raise ValueError(f"the answer template must hold exactly one {SCORE_TOKEN}: {answer!r}")
        ids = prefix + user + answer_ids
        labels = [IGNORE_INDEX] * (len(prefix) + len(user)) + answer_ids
        return {"input_ids": ids, "labels": labels, "prefix_len": len(prefix)}

    def split_for_cache(self, expression: str) -> tuple[list[int], list[int]]:
        """(prefix, suffix) of the inference prompt; the suffix (target image, question, forced answer text) ends
        at the token that predicts [SCORE]: nothing after it changes that token's hidden state."""
        item = self.build(expression)
        ids, p = item["input_ids"], item["prefix_len"]
        return ids[:p], ids[p:ids.index(self.score_id)]

    def collate(self, items: list[dict]) -> ScorePromptBatch:
        input_ids, mask = pad_right([it["input_ids"] for it in items], self.tok.pad_token_id)
        labels, _ = pad_right([it["labels"] for it in items], IGNORE_INDEX)
        return ScorePromptBatch(input_ids, mask, labels, self.score_positions(input_ids, mask))

    def score_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hits = (input_ids == self.score_id) & attention_mask.bool()
        counts = hits.sum(1)
        if not torch.all(counts == 1):
            raise ValueError(f"expected one {SCORE_TOKEN} per prompt, found {counts.tolist()}")
        return hits.nonzero()[:, 1]

    @property
    def images_per_prompt(self) -> int:
        return self.num_reference + 1


# ---- model ---------------------------------------------------------------------------------------------------

@dataclass
class SelectorOutput:
    scores: torch.Tensor        # (B,) float32: the head's output (no sigmoid, as published)
    score_hidden: torch.Tensor  # (B, D) last-layer hidden states that predict [SCORE]
    lm_logits: torch.Tensor     # (N, vocab) at the supervised positions
    lm_targets: torch.Tensor    # (N,)


def make_score_head(hidden_size: int, head_hidden: int) -> nn.Sequential:
    """The published head: D -> D -> ReLU -> head_hidden -> ReLU -> 1 (4096 -> 4096 -> 256 -> 1 at 7B)."""
    return nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, head_hidden),
                         nn.ReLU(), nn.Linear(head_hidden, 1))


class KeyFrameSelector(nn.Module):
    def __init__(self, mllm: MultimodalLM, head_hidden: int = 256, num_reference: int = 8,
                 template: str = "readable", score_loss: str = "l1", ce_weight: float = 1.0,
                 score_weight: float = 1.0):
        super().__init__()
        if score_loss not in SCORE_LOSSES:
            raise ValueError(f"score_loss must be one of {SCORE_LOSSES}, got {score_loss!r}")
        self.mllm, self.num_reference, self.template = mllm, num_reference, template
        self.score_loss, self.ce_weight, self.score_weight = score_loss, ce_weight, score_weight
        self.score_head = make_score_head(mllm.hidden_size, head_hidden)

    def score(self, hidden_BD: torch.Tensor) -> torch.Tensor:
        """[SCORE]-predicting hidden states (B, D) -> (B,) float32 scores."""
        first = self.score_head[0].weight
        return self.score_head(hidden_BD.to(first.dtype)).squeeze(-1).float()

    def forward(self, clip_frames: torch.Tensor, prompts: ScorePromptBatch) -> SelectorOutput:
        """clip_frames (B, num_reference + 1, 3, h, w): CLIP input in prompt order, the reference frames (in time
        order) then the target frame; prompts: one per row (ScorePromptBuilder.collate)."""
        B, Fn = clip_frames.shape[:2]
        visual = self.mllm.encode_frames(clip_frames.flatten(0, 1))
        visual = self.mllm.relate_frames(visual.view(B, Fn, *visual.shape[1:]), Fn - 1)  # the target: a query
        hidden, _ = self.mllm.run(prompts.input_ids, visual, prompts.attention_mask)
        score_hidden = hidden[torch.arange(B, device=hidden.device), prompts.score_positions - 1]
        (r, c), targets = label_positions(prompts.labels)
        return SelectorOutput(self.score(score_hidden), score_hidden, self.mllm.logits_at(hidden[r, c]), targets)

    def losses(self, out: SelectorOutput, labels_B: torch.Tensor) -> dict[str, torch.Tensor]:
        """CE on the answer, L1 (published code) or L2 (paper) between scores and labels; both weighted."""
        target = labels_B.to(out.scores.device, torch.float32)
        fn = F.l1_loss if self.score_loss == "l1" else F.mse_loss
        terms = {"ce": ce_loss(out.lm_logits, out.lm_targets), "score": fn(out.scores, target)}
        terms["loss"] = self.ce_weight * terms["ce"] + self.score_weight * terms["score"]
        return terms


# ---- builders (LightningCLI class_path) ---------------------------------------------------------------------

def prepare_language_model(mllm: MultimodalLM, tokenizer, seed: int = 0) -> None:
    """Add [SCORE]; grow the embedding and LM head by its row when it is new. The new row is drawn from the old
    rows' mean and covariance (transformers' mean resizing) under a fixed seed, so that two builds agree."""
    add_score_token(tokenizer)
    if len(tokenizer) != mllm.base_lm.get_input_embeddings().weight.shape[0]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mllm.base_lm.resize_token_embeddings(len(tokenizer))


def set_selector_trainables(selector: KeyFrameSelector, base_layers: bool = False) -> None:
    """The published selector's trainable set: LoRA (q, v), embeddings, lm_head and the score head; the vision
    tower and projector stay frozen (LISA's rule). `base_layers`: also the LM's own weights (tiny models only)."""
    set_lm_trainables(selector.mllm, embeddings="all", lm_head=True, projector=False, base_layers=base_layers)
    selector.score_head.requires_grad_(True)


def mllm_from_export(folder: str | Path) -> tuple[MultimodalLM, object]:
    """The multimodal LM and tokenizer of a GLUS export, its LoRA merged into the base weights (peft
    merge_and_unload): the selector's starting point, on which it puts its own LoRA."""
    from glus.model.weights.load import load_export

    if not Path(folder).is_dir():
        raise CheckpointError(f"init_from {folder} not found: the selector starts from a GLUS export. Fix: train "
                              "one first (make train writes runs/synthetic/latest/export), or set init_from: null")
    glus, tokenizer, _ = load_export(folder)
    mllm = glus.mllm
    if hasattr(mllm.language_model, "merge_and_unload"):
        mllm.language_model = mllm.language_model.merge_and_unload()
    return mllm.train(), tokenizer


class SelectorBuilder(ABC):
    """What a selector recipe names as its builder (LightningCLI class_path): the type hint that lets the command
    line override a builder's arguments (--model.init_args.builder.init_args.NAME VALUE)."""

    @abstractmethod
    def build(self) -> tuple[KeyFrameSelector, object]:
        """(selector, tokenizer holding [SCORE])."""

    def required_paths(self) -> list[tuple[str, str]]:
        """(path, how to get it) for every input this builder reads."""
        return []


class TinySelectorBuilder(SelectorBuilder):
    """The tiny selector for tests and the synthetic recipe. With `init_from` (a GLUS export folder) it starts from
    that GLUS' trained multimodal LM, our stand-in for the published selector's pretrained video LLM (a random
    tiny LM would have to learn vision and language from 16 videos). The export must exist whenever the
    selector is built, also when a selector export is loaded (load_export builds the model again, then copies
    the trained tensors over it)."""

    def __init__(self, seed: int = 0, clip_image_size: int = 112, pool: int = 4, clip_resize: str = "squash",
                 head_hidden: int = 16, init_from: str | None = None, lora: bool = True,
                 train_vision_tower: bool = False, train_language_model: bool = False, score_loss: str = "l1",
                 ce_weight: float = 1.0, score_weight: float = 1.0, num_reference: int = 8):
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})

    def required_paths(self) -> list[tuple[str, str]]:
        return [(self.init_from, "make train (the synthetic GLUS export)")] if self.init_from else []

    def _fresh_mllm(self) -> tuple[MultimodalLM, object]:
        from glus.model.build.tiny import tiny_clip_config, tiny_language_model

        tokenizer = build_tiny_tokenizer()
        add_score_token(tokenizer)
        torch.manual_seed(self.seed)
        vision = CLIPVisionModel(tiny_clip_config(image_size=self.clip_image_size))
        vl = VisionLanguageConfig(pool=self.pool, clip_resize=self.clip_resize)
        return MultimodalLM(vision, tiny_language_model(len(tokenizer)), vl), tokenizer

    def _check_export(self, mllm: MultimodalLM) -> None:
        have = {"clip_image_size": mllm.vision_tower.config.image_size, "pool": mllm.config.pool,
                "clip_resize": mllm.config.clip_resize}
        wrong = {k: v for k, v in have.items() if getattr(self, k) != v}
        video = mllm.video_projector
        if video is not None and self.num_reference + 1 > video.slots:
            raise CheckpointError(f"init_from {self.init_from} has a video projector with {video.slots} frame slots, "
                                  f"too few for {self.num_reference} reference frames and the target. Fix: "
                                  f"num_reference <= {video.slots - 1}, or train that GLUS with video_slots >= "
                                  f"{self.num_reference + 1}")
        if wrong:
            raise CheckpointError(f"init_from {self.init_from} was trained with " + ", ".join(
                f"{k} {v}" for k, v in wrong.items()) + " but the selector builder says " + ", ".join(
                f"{k} {getattr(self, k)}" for k in wrong) + ". Fix: set the builder's values to the export's")

    def build(self) -> tuple[KeyFrameSelector, object]:
        if self.init_from:
            mllm, tokenizer = mllm_from_export(self.init_from)
            self._check_export(mllm)
            prepare_language_model(mllm, tokenizer, self.seed)
        else:
            mllm, tokenizer = self._fresh_mllm()
        mllm.train_vision_tower = self.train_vision_tower
        mllm.vision_tower.requires_grad_(self.train_vision_tower)
        if self.lora:
            apply_lora(mllm)
        torch.manual_seed(self.seed + 1)
        selector = KeyFrameSelector(mllm, self.head_hidden, self.num_reference, score_loss=self.score_loss,
                                    ce_weight=self.ce_weight, score_weight=self.score_weight)
        set_selector_trainables(selector, base_layers=self.train_language_model)
        return selector, tokenizer


class LisaSelectorBuilder(SelectorBuilder):
    """The selector at 7B: LISA-7B-v1 (CLIP ViT-L/14 + Vicuna-7B, centre crop, strip pooling) with [SCORE] added,
    LoRA r 8 / alpha 16 / dropout 0.05 on q, v, and the published trainable set (LoRA, embeddings, lm_head, head
    4096 -> 4096 -> 256 -> 1). The published selector starts from Chat-UniVi-7B; LISA is the 7B multimodal LM
    this project loads."""

    def __init__(self, lisa_folder: str = "checkpoints/LISA-7B-v1", clip_folder: str | None = None, lora_r: int = 8,
                 lora_alpha: int = 16, lora_dropout: float = 0.05, head_hidden: int = 256, score_loss: str = "l1",
                 ce_weight: float = 1.0, score_weight: float = 1.0, dtype: str = "float32", num_reference: int = 8):
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})

    def required_paths(self) -> list[tuple[str, str]]:
        how = "put it in place by hand: see checkpoints/README.md"
        return [(self.lisa_folder, how)] + ([(self.clip_folder, how)] if self.clip_folder else [])

    def build(self) -> tuple[KeyFrameSelector, object]:
        from glus.model.weights.lisa import load_lisa

        mllm, tokenizer, _ = load_lisa(self.lisa_folder, clip_folder=self.clip_folder,
                                       dtype=getattr(torch, self.dtype))
        prepare_language_model(mllm, tokenizer)
        apply_lora(mllm, self.lora_r, self.lora_alpha, self.lora_dropout)
        selector = KeyFrameSelector(mllm, self.head_hidden, self.num_reference, score_loss=self.score_loss,
                                    ce_weight=self.ce_weight, score_weight=self.score_weight)
        set_selector_trainables(selector)
        return selector, tokenizer


def lisa_selector_7b_on_meta() -> KeyFrameSelector:
    """The 7B selector's shapes on the meta device (no weights): for parameter counts and trainable-set checks."""
    from transformers import LlamaForCausalLM

    from glus.model.build.published import lisa_7b_configs

    clip_cfg, llama_cfg = lisa_7b_configs(vocab_size=32004)  # LISA's 32003 tokens + [SCORE]
    with torch.device("meta"):
        mllm = MultimodalLM(CLIPVisionModel(clip_cfg), LlamaForCausalLM(llama_cfg), VisionLanguageConfig())
        apply_lora(mllm)
        selector = KeyFrameSelector(mllm, head_hidden=256)
        set_selector_trainables(selector)
    return selector
