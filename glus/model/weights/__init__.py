"""Weights in and out: exports (`export`, `load`, `heads`), released GLUS folders (`released`), LISA / LLaVA
folders (`lisa`)."""
