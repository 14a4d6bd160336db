"""Tokenizers: the real one comes from a checkpoint folder; a tiny one is built offline, in code.

The tiny tokenizer is a byte-level BPE trained (in well under a second) on the prompt templates and the
synthetic videos' vocabulary, so it encodes any text and exercises the same code paths as LLaMA's.
"""
from __future__ import annotations

from functools import lru_cache

from transformers import PreTrainedTokenizerFast

# Image slots use LLaVA's placeholder id: it is not in the vocabulary, so loading a checkpoint never needs a
# resized embedding matrix; the embedding layer never sees it (the slots are overwritten by visual tokens).
IMAGE_TOKEN_INDEX = -200
IM_START, IM_END = "<im_start>", "<im_end>"
SEG_TOKEN = "[SEG]"
SPECIAL_TOKENS = (SEG_TOKEN, IM_START, IM_END)  # LISA's added tokens


def add_glus_tokens(tokenizer) -> list[int]:
    """Add [SEG], <im_start> and <im_end> (LISA's added tokens) where missing; pad = unk as in LISA.

    Returns the ids of the tokens that were new (their embedding rows are the "new rows" a recipe may train).
    """
    before = len(tokenizer)
    tokenizer.add_tokens([t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    return list(range(before, len(tokenizer)))


def _corpus() -> list[str]:
    from glus.model.mllm.templates import TEMPLATES
    from glus.vocabulary import COLOURS, MOTION_PHRASES, PLURAL_MOTION, SHAPES

    words = list(COLOURS) + list(SHAPES) + ["grey", "bar", "object", "objects", "two", "three", "the", "that", "is"]
    # The readable templates (the tiny models' own): the published ones encode too (byte-level BPE), in more
    # tokens; adding them would reshuffle the token ids and with them the from-scratch model's initialisation.
    t = TEMPLATES["readable"]
    lines = [t.system, t.context_line, "USER: ASSISTANT:", *t.questions, *t.answers]
    lines += [p for ps in MOTION_PHRASES.values() for p in ps] + list(PLURAL_MOTION.values())
    # The synthetic vocabulary is frequent, so each of its words becomes one token, as "red" or "circle" are in
    # LLaMA's vocabulary: a from-scratch LM then links a word to its meaning without first composing fragments.
    lines += [" " + " ".join(words)] * 20 + [" " + p for ps in MOTION_PHRASES.values() for p in ps] * 5
    lines += ["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,?!'\"-:;()"]
    return lines * 3


@lru_cache(maxsize=1)
def _tiny_tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok.to_str()


def build_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A deterministic tiny tokenizer with GLUS' special tokens already added."""
    from tokenizers import Tokenizer

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json(vocab_size)),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>")
    add_glus_tokens(tok)
    return tok
