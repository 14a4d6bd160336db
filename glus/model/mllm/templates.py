"""The conversation text GLUS is trained and run on: one small table, one entry per template set.

- "published": the published GLUS (`utils/utils.py` and `inference_iter.py` of GLUS-video/GLUS), word for
  word, their spelling included ("Please finished ..."). Its questions say "the {exp}", so an expression that
  starts with "the" reads "the the ..." as in the published code. At inference every round asks the first
  question and answers "Sure, the segmentation result is [SEG]."; the newest round's answer is forced up to
  [SEG] (the published loop generates one token after that prefix).
- "readable": our variant for models trained here from scratch (the synthetic recipe): a plain context line,
  questions that give the expression its article only when it has none.
- "chatml_published", "chatml_readable": the same texts in ChatML, the conversation format of Qwen2.5-VL (its
  chat template: `<|im_start|>role\n...<|im_end|>`, images as `<|vision_start|><|image_pad|>...<|vision_end|>`),
  with Qwen's own system line. A VLM is run in the format it was instruction-tuned on.

A template set names its conversation format (`ChatFormat`, the table CHATS): the role markers, how a turn
ends, and the tokens around an image's slots. LLaVA-1 (LISA's) is "llava_v1".
"""
from __future__ import annotations

from dataclasses import dataclass, replace

IM_START, IM_END = "<im_start>", "<im_end>"
SEG_TOKEN = "[SEG]"
SPECIAL_TOKENS = (SEG_TOKEN, IM_START, IM_END)  # LISA's added tokens

LLAVA_V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                   "The assistant gives helpful, detailed, and polite answers to the human's questions.")


@dataclass(frozen=True)
class ChatFormat:
    """How a conversation is spelled around the template's texts (`PromptBuilder.build`):
    [BOS] system_open SYSTEM system_close | user_open <images> ... assistant_open | ANSWER turn_end | between ..."""
    system_open: str
    system_close: str
    user_open: str
    assistant_open: str
    turn_end: str | None          # the token that ends an answer (trained in "answer" label mode); None: EOS
    between_turns: str            # text between one answer's end and the next user turn
    image_open: str               # token before an image's slots
    image_slot: str | None        # the slot token; None: LLaVA's placeholder id (-200), outside the vocabulary
    image_close: str              # token after an image's slots
    added_tokens: tuple[str, ...]  # what GLUS adds to the tokenizer (`add_glus_tokens`), [SEG] first


CHATS = {
    # LISA / LLaVA-1: "SYSTEM USER: <image>\n... ASSISTANT: answer</s>USER: ..."; LISA adds <im_start>, <im_end>
    "llava_v1": ChatFormat(system_open="", system_close=" ", user_open="USER: ", assistant_open=" ASSISTANT: ",
                           turn_end=None, between_turns="", image_open=IM_START, image_slot=None,
                           image_close=IM_END, added_tokens=SPECIAL_TOKENS),
    # Qwen2.5-VL's chat template; its vision tokens are its own (in its vocabulary), so GLUS adds only [SEG]
    "chatml": ChatFormat(system_open="<|im_start|>system\n", system_close="<|im_end|>\n",
                         user_open="<|im_start|>user\n", assistant_open="<|im_end|>\n<|im_start|>assistant\n",
                         turn_end="<|im_end|>", between_turns="\n", image_open="<|vision_start|>",
                         image_slot="<|image_pad|>", image_close="<|vision_end|>", added_tokens=(SEG_TOKEN,)),
}
QWEN_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class PromptTemplates:
    system: str
    context_line: str               # after the context frames, before the first query frame
    questions: tuple[str, ...]      # "{exp}": the cleaned expression; one drawn per round in training
    answers: tuple[str, ...]        # each holds exactly one [SEG]
    inference_question: str
    inference_answer: str           # every round at inference; the text before [SEG] is the forced prefix
    add_article: bool               # "{exp}" gets "the" unless it starts with an article or determiner
    chat: str = "llava_v1"          # the conversation format (CHATS)

    @property
    def chat_format(self) -> ChatFormat:
        return CHATS[self.chat]


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


TEMPLATES["chatml_published"] = replace(TEMPLATES["published"], system=QWEN_SYSTEM, chat="chatml")
TEMPLATES["chatml_readable"] = replace(TEMPLATES["readable"], system=QWEN_SYSTEM, chat="chatml")


def get_templates(name: str | PromptTemplates) -> PromptTemplates:
    if isinstance(name, PromptTemplates):
        return name
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template set {name!r}: one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]
