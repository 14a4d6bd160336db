"""The conversation text GLUS is trained and run on: one small table, one entry per template set.

- "published": the published GLUS (`utils/utils.py` and `inference_iter.py` of GLUS-video/GLUS), word for
  word, their spelling included ("Please finished ..."). Its questions say "the {exp}", so an expression that
  starts with "the" reads "the the ..." as in the published code. At inference every round asks the first
  question and answers "Sure, the segmentation result is [SEG]."; the newest round's answer is forced up to
  [SEG] (the published loop generates one token after that prefix).
- "readable": our variant for models trained here from scratch (the synthetic recipe): a plain context line,
  questions that give the expression its article only when it has none.
"""
from __future__ import annotations

from dataclasses import dataclass

LLAVA_V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                   "The assistant gives helpful, detailed, and polite answers to the human's questions.")


@dataclass(frozen=True)
class PromptTemplates:
    system: str
    context_line: str               # after the context frames, before the first query frame
    questions: tuple[str, ...]      # "{exp}": the cleaned expression; one drawn per round in training
    answers: tuple[str, ...]        # each holds exactly one [SEG]
    inference_question: str
    inference_answer: str           # every round at inference; the text before [SEG] is the forced prefix
    add_article: bool               # "{exp}" gets "the" unless it starts with an article or determiner


TEMPLATES = {
    "published": PromptTemplates(
        system=LLAVA_V1_SYSTEM,
        context_line="Please finished the following tasks on the context frames above.",
        questions=("Can you segment the {exp} in this frame?",
                   "Please segment the {exp} in this frame.",
                   "What is {exp} in this frame? Please respond with segmentation mask.",
                   "What is {exp} in this frame? Please output segmentation mask."),
        answers=("It is [SEG].", "Sure, [SEG].", "Sure, it is [SEG].", "Sure, the segmentation result is [SEG].",
                 "[SEG]."),
        inference_question="Can you segment the {exp} in this frame?",
        inference_answer="Sure, the segmentation result is [SEG].",
        add_article=False,
    ),
    "readable": PromptTemplates(
        system=LLAVA_V1_SYSTEM,
        context_line="These are context frames of a video. The tasks below are about the frames of this video.",
        questions=("Can you segment {exp} in this frame?",
                   "Please segment {exp} in this frame.",
                   "What is {exp} in this frame? Please respond with segmentation mask.",
                   "Where is {exp} in this frame? Please output segmentation mask."),
        answers=("It is [SEG].", "Sure, [SEG].", "Sure, it is [SEG].", "Sure, the segmentation result is [SEG]."),
        inference_question="Can you segment {exp} in this frame?",
        inference_answer="It is [SEG].",
        add_article=True,
    ),
}


def get_templates(name: str | PromptTemplates) -> PromptTemplates:
    if isinstance(name, PromptTemplates):
        return name
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template set {name!r}: one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]
