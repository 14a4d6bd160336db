"""Tokenizers: the real one comes from a checkpoint folder; a tiny one is built offline, in code.

The tiny tokenizer is a byte-level BPE trained (in well under a second) on the prompt templates and the
synthetic videos' vocabulary, so it encodes any text and exercises the same code paths as LLaMA's. The tiny
Qwen tokenizer is transformers' own `Qwen2Tokenizer` (Qwen's pre-tokenizer split, byte-level BPE, NFC) over the
same trained vocabulary and merges, with Qwen2.5-VL's special tokens added as its tokenizer.json adds them.
"""
from __future__ import annotations

from functools import lru_cache

from transformers import PreTrainedTokenizerFast

from glus.model.mllm.templates import CHATS, TEMPLATES
from glus.model.mllm.templates import IM_END, IM_START, SEG_TOKEN, SPECIAL_TOKENS  # noqa: F401 (re-exported)

# Image slots use LLaVA's placeholder id: it is not in the vocabulary, so loading a checkpoint never needs a
# resized embedding matrix; the embedding layer never sees it (the slots are overwritten by visual tokens).
IMAGE_TOKEN_INDEX = -200


def add_glus_tokens(tokenizer, chat: str = "llava_v1") -> list[int]:
    """Add the tokens GLUS needs in conversation format `chat` where missing: [SEG], <im_start> and <im_end>
    (LISA's added tokens) for LLaVA-1, [SEG] alone for ChatML (Qwen's vision tokens are its own); pad = unk
    where the tokenizer has no pad token, as in LISA.

    Returns the ids of the tokens that were new (their embedding rows are the "new rows" a recipe may train).
    """
    before = len(tokenizer)
    added = CHATS[chat].added_tokens
    tokenizer.add_tokens([t for t in added if t not in tokenizer.get_vocab()], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    return list(range(before, len(tokenizer)))


def _corpus() -> list[str]:
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


# Qwen2.5-VL's added tokens, in the order of its tokenizer.json (ids 151643-151656 there, after the BPE vocabulary)
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                       "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                       "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


def build_tiny_qwen_tokenizer(vocab_size: int = 512):
    """A deterministic tiny tokenizer of Qwen2.5-VL's kind (`Qwen2Tokenizer`: no BOS, EOS <|im_end|>, pad
    <|endoftext|>) with Qwen's special tokens after its vocabulary and GLUS' [SEG] after them."""
    import json

    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    model = json.loads(_tiny_tokenizer_json(vocab_size))["model"]
    vocab = {k: v for k, v in model["vocab"].items() if k not in ("<unk>", "<s>", "</s>")}
    vocab = {k: i for i, k in enumerate(sorted(vocab, key=vocab.get))}  # dense ids after dropping LLaMA's specials
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_tokens([AddedToken(t, special=True) for t in QWEN_SPECIAL_TOKENS], special_tokens=True)
    add_glus_tokens(tok, chat="chatml")
    return tok


def build_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A deterministic tiny tokenizer with GLUS' special tokens already added."""
    from tokenizers import Tokenizer

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json(vocab_size)),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>")
    add_glus_tokens(tok)
    return tok
