"""The llava_v1 conversation GLUS is trained on: 4 context frames, then one query round per query frame.

    [BOS] SYSTEM USER: <ctx><ctx><ctx><ctx>\nCONTEXT_LINE\n<q1>\nQUESTION ASSISTANT: ANSWER</s>USER: <q2>\n...

The text comes from a template set (`templates.py`: the published one, or ours), spelled in the set's
conversation format (LLaVA-1 as above, or ChatML for Qwen2.5-VL: `<|im_start|>user\n...<|im_end|>\n
<|im_start|>assistant\n ANSWER<|im_end|>\n<|im_start|>user\n...`).

Every image is an opening token + K image slots + a closing token (<im_start>/<im_end> for LISA,
<|vision_start|>/<|vision_end|> for Qwen), K = visual tokens per frame, so the splice of visual features and
the [SEG] positions are found from the token ids, never from hard-coded offsets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from glus.model.mllm.templates import PromptTemplates, get_templates
from glus.model.mllm.tokenizer import IMAGE_TOKEN_INDEX, SEG_TOKEN

IGNORE_INDEX = -100


def clean_expression(text: str) -> str:
    """As GLUS: lower-cased, trailing '.' removed."""
    return text.strip().lower().rstrip(".").strip()


def with_article(exp: str) -> str:
    return exp if exp.split(" ", 1)[0] in ("the", "a", "an", "this", "that", "all", "both") else f"the {exp}"


def pad_right(sequences: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) long tensor right-padded with `value`, and its (N, L) attention mask."""
    length = max(len(s) for s in sequences)
    out = torch.full((len(sequences), length), value, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return out, mask


@dataclass
class PromptBatch:
    input_ids: torch.Tensor       # (E, L) right-padded
    attention_mask: torch.Tensor  # (E, L)
    labels: torch.Tensor          # (E, L), IGNORE_INDEX where no loss
    seg_positions: torch.Tensor   # (E, Q) index of each [SEG] token, in query order


class PromptBuilder:
    def __init__(self, tokenizer, tokens_per_frame: int = 64, num_context: int = 4, im_start_end: bool = True,
                 label_mode: str = "seg",  # "seg": CE at [SEG] only (GLUS); "answer": whole answer (LISA)
                 template: str | PromptTemplates = "published"):
        if label_mode not in ("seg", "answer"):
            raise ValueError(f"label_mode must be 'seg' or 'answer', got {label_mode!r}")
        self.tok, self.k, self.num_context = tokenizer, tokens_per_frame, num_context
        self.im_start_end, self.label_mode = im_start_end, label_mode
        self.templates = get_templates(template)
        self.chat = chat = self.templates.chat_format
        names = [chat.image_open, chat.image_close, SEG_TOKEN] + ([chat.image_slot] if chat.image_slot else [])
        ids = tokenizer.convert_tokens_to_ids(names)
        if None in ids or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids):
            raise ValueError(f"the tokenizer lacks some of {names} (the {self.templates.chat!r} conversation's "
                             f"tokens): call add_glus_tokens(tokenizer, {self.templates.chat!r}) first")
        self.im_start_id, self.im_end_id, self.seg_id = ids[:3]
        self.image_id = ids[3] if chat.image_slot else IMAGE_TOKEN_INDEX
        self.turn_end_id = tokenizer.eos_token_id if chat.turn_end is None else \
            tokenizer.convert_tokens_to_ids(chat.turn_end)

    def _text(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def _image(self) -> list[int]:
        body = [self.image_id] * self.k
        return [self.im_start_id, *body, self.im_end_id] if self.im_start_end else body

    def _expression(self, expression: str) -> str:
        exp = clean_expression(expression)
        if not exp:
            raise ValueError("empty expression")
        return with_article(exp) if self.templates.add_article else exp

    def build(self, expression: str, num_query: int, rng: np.random.Generator | None = None) -> dict:
        """Token ids and labels of one conversation. With rng, questions and answers are drawn from the template
        set (training); without, every round is the inference question and answer (deterministic)."""
        t, exp = self.templates, self._expression(expression)
        if rng is not None:
            def round_text():
                return t.questions[int(rng.integers(len(t.questions)))], t.answers[int(rng.integers(len(t.answers)))]
        else:
            def round_text():
                return t.inference_question, t.inference_answer
        chat = self.chat
        ids = [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []
        ids += self._text(chat.system_open + t.system + chat.system_close)
        labels = [IGNORE_INDEX] * len(ids)
        prefix_len = 0
        for q in range(num_query):
            user = self._text((chat.between_turns if q else "") + chat.user_open)
            if q == 0:
                for _ in range(self.num_context):
                    user += self._image()
                user += self._text("\n" + t.context_line + "\n")
                prefix_len = len(ids) + len(user)
            question, answer_text = round_text()
            user += self._image() + self._text("\n" + question.format(exp=exp) + chat.assistant_open)
            answer = self._text(answer_text) + [self.turn_end_id]
            if answer.count(self.seg_id) != 1:
                raise ValueError(f"the answer template must hold exactly one {SEG_TOKEN}")
            ids += user + answer
            labels += [IGNORE_INDEX] * len(user)
            labels += answer if self.label_mode == "answer" else [a if a == self.seg_id else IGNORE_INDEX
                                                                    for a in answer]
        # prefix_len: the tokens before the first query frame (system, context frames, context line). They do not
        # depend on the expression nor on the query frames, so inference encodes them once per video (KV cache).
        return {"input_ids": ids, "labels": labels, "prefix_len": prefix_len}

    def expression_tokens(self, expression: str) -> list[int]:
        """The expression's token ids as the prompt spells it (after "segment ", with its article)."""
        return self._text(" " + self._expression(expression))

    def split_for_cache(self, expression: str, num_query: int) -> tuple[list[int], list[int]]:
        """(prefix, suffix) token ids of the inference prompt: the suffix holds the query rounds and ends at the
        token that predicts the last [SEG] (the answer is forced, so one forward reads it; nothing after it
        can change it under causal attention)."""
        item = self.build(expression, num_query)
        ids, p = item["input_ids"], item["prefix_len"]
        last_seg = len(ids) - 1 - ids[::-1].index(self.seg_id)
        return ids[:p], ids[p:last_seg]

    def collate(self, items: list[dict], num_query: int) -> PromptBatch:
        input_ids, mask = pad_right([it["input_ids"] for it in items], self.tok.pad_token_id)
        labels, _ = pad_right([it["labels"] for it in items], IGNORE_INDEX)
        return PromptBatch(input_ids, mask, labels, self.seg_positions(input_ids, mask, num_query))

    def seg_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_query: int) -> torch.Tensor:
        hits = (input_ids == self.seg_id) & attention_mask.bool()
        counts = hits.sum(1)
        if not torch.all(counts == num_query):
            raise ValueError(f"expected {num_query} {SEG_TOKEN} per prompt, found {counts.tolist()}")
        return hits.nonzero()[:, 1].view(len(input_ids), num_query)

    def images_per_prompt(self, num_query: int) -> int:
        return self.num_context + num_query
