"""Build real ClipBatches from synthetic videos for the model tests."""
import numpy as np
import torch

from glus.data.synth.video import make_video
from glus.model.glus import ClipBatch
from glus.model.mllm import PromptBuilder


def synthetic_batch(model, tokenizer, videos=(0, 1), exps_per_video=(2, 1), num_query=4, num_context=4, seed=0,
                    template="published"):
    builder = PromptBuilder(tokenizer, tokens_per_frame=model.mllm.tokens_per_frame(), num_context=num_context,
                            template=template)
    rng = np.random.default_rng(seed)
    clip, sam, prompts, video_index, masks = [], [], [], [], []
    for v, (vid, n_exp) in enumerate(zip(videos, exps_per_video)):
        video = make_video(0, "train", vid)
        frames = torch.from_numpy(np.stack(video.frames))
        ctx = [0, 3, 6, 9][:num_context]
        query = list(range(2, 2 + num_query))
        clip.append(model.mllm.preprocess(frames[ctx + query]))
        sam.append(model.segmenter.preprocess(frames[query]))
        singles = [r for r in video.referrals if len(r.obj_ids) == 1][:n_exp]
        for ref in singles:
            prompts.append(builder.build(ref.text, num_query, rng))
            video_index.append(v)
            labels = np.stack([video.labels[t] for t in query])
            masks.append(torch.from_numpy(labels == ref.obj_ids[0] + 1))
    return ClipBatch(torch.stack(clip), torch.stack(sam), builder.collate(prompts, num_query),
                     torch.tensor(video_index), masks)


def inference_setup(base, seed: int, videos: int, builder_args: dict | None = None,
                    builder: str = "glus.model.build.tiny.TinyGLUSBuilder"):
    """(base, mevis/valid_u index, untrained tiny export, its model, tokenizer) over synthetic data under base;
    builder_args: more arguments of `builder`."""
    from glus.data.cache import load_split
    from glus.data.synth import write_synthetic
    from glus.model.weights.export import export_untrained
    from glus.model.weights.load import load_export

    write_synthetic(base / "data", seed=seed, videos=videos)
    export = export_untrained(base / "export", {"seed": 0, "clip_image_size": 112, "sam_image_size": 128,
                                                **(builder_args or {})}, builder=builder)
    model, tokenizer, _ = load_export(export)
    return base, load_split(base / "data", "mevis/valid_u"), export, model, tokenizer
