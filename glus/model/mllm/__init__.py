from glus.model.mllm.model import MultimodalLM, VisionLanguageConfig
from glus.model.mllm.prompt import PromptBuilder, PromptBatch
from glus.model.mllm.tokenizer import SPECIAL_TOKENS, add_glus_tokens, build_tiny_tokenizer

__all__ = ["MultimodalLM", "VisionLanguageConfig", "PromptBuilder", "PromptBatch", "SPECIAL_TOKENS",
           "add_glus_tokens", "build_tiny_tokenizer"]
