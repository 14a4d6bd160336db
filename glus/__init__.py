"""glus: LLM-driven referring video object segmentation (GLUS, CVPR 2025) as maintained software."""

__version__ = "0.1.0"
