"""Synthetic referring videos: a complete MeViS and Ref-YouTube-VOS dataset made in seconds, by seed."""
from glus.data.synth.writer import write_synthetic

__all__ = ["write_synthetic"]
