from glus.model.segmenter.build import build_sam2_model
from glus.model.segmenter.sam2_segmenter import FrameFeatures, SAM2Segmenter, SegOutput

__all__ = ["build_sam2_model", "FrameFeatures", "SAM2Segmenter", "SegOutput"]
