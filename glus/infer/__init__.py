"""Inference: the streaming engine and the published loop (engine), split-level prediction with resume and
sharding (predict), and output paths that metadata cannot escape (paths)."""
