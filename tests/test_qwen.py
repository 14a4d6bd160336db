"""Qwen2.5-VL as GLUS' multimodal LM, checked against transformers' own Qwen2.5-VL: its image processor (patch
layout), its forward (M-RoPE positions, the splice of the image features), and the engine's KV cache against the
whole prompt; strict loading of a folder written by `save_pretrained`; where LoRA lands; key frames and sparse
mode with this backbone; a training step."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from glus.infer.engine import FaithfulLoop, StreamingEngine, VideoState, pass_frames
from glus.model.errors import CheckpointError
from glus.model.mllm.qwen import patchify
from glus.transforms import CLIP_MEAN, CLIP_STD, normalise
from tests.model_helpers import inference_setup, synthetic_batch

QWEN = "glus.model.build.qwen.TinyQwenGLUSBuilder"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def qwen_setup(tmp_path_factory):
    return inference_setup(tmp_path_factory.mktemp("qwen"), seed=1, videos=4, builder=QWEN)


def test_frames_are_patched_as_qwens_own_processor_patches_them():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    frames = np.random.default_rng(0).integers(0, 256, (2, 56, 84, 3), dtype=np.uint8)  # not square: h, w apart
    ref = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2)(
        images=list(frames), do_resize=False, return_tensors="pt")
    x = normalise(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255, CLIP_MEAN, CLIP_STD)
    assert ref["image_grid_thw"].tolist() == [[1, 4, 6], [1, 4, 6]]
    torch.testing.assert_close(patchify(x, 14, 2, 2), ref["pixel_values"].float(), rtol=0, atol=1e-5)


def _reference_hidden(mllm, batch):
    """transformers' Qwen2_5_VLModel forward on the same prompts, from pixel values in its processor's layout."""
    p = batch.prompts
    frames = batch.clip_frames[batch.video_index].flatten(0, 1)  # every prompt's images, in prompt order
    n, side = len(frames), frames.size(-1) // mllm.patch
    out = mllm.base_lm.model(input_ids=p.input_ids, attention_mask=p.attention_mask,
                             pixel_values=patchify(frames, mllm.patch, mllm.merge, mllm.temporal),
                             image_grid_thw=torch.tensor([[1, side, side]] * n),
                             mm_token_type_ids=(p.input_ids == mllm.image_token_id).int())
    return out.last_hidden_state


@torch.no_grad()
def test_run_equals_transformers_qwen_forward(qwen_setup):
    _, _, _, model, tokenizer = qwen_setup
    mllm = model.mllm
    batch = synthetic_batch(model, tokenizer, template=model.template)  # 3 prompts of 2 videos, right-padded
    p = batch.prompts
    assert len(set(p.attention_mask.sum(1).tolist())) > 1
    V, Fn = batch.clip_frames.shape[:2]
    visual = mllm.encode_frames(batch.clip_frames.flatten(0, 1))
    visual = visual.view(V, Fn, *visual.shape[1:])[batch.video_index]
    ours, _ = mllm.run(p.input_ids, visual, p.attention_mask)
    ref = _reference_hidden(mllm, batch)
    valid = p.attention_mask.bool()
    torch.testing.assert_close(ours[valid], ref[valid], rtol=0, atol=1e-5)
    # the positions matter at these shapes: plain text positions give other states
    plain, _ = mllm.hidden_states(mllm.embed(p.input_ids, visual), p.attention_mask)
    assert (plain[valid] - ref[valid]).abs().max() > 1e-3


@torch.no_grad()
def test_a_cached_prefix_gives_the_whole_prompts_states(qwen_setup):
    """The engine's split: the context prefix run once (batch 1, repeated), each expression's window after it."""
    _, _, _, model, tokenizer = qwen_setup
    mllm, engine = model.mllm, StreamingEngine(model, tokenizer)
    texts = ["the red circle", "the two blue squares that move to the left", "a green triangle"]
    k = mllm.tokens_per_frame()
    torch.manual_seed(0)
    ctx, window = torch.randn(1, 4, k, mllm.hidden_size), torch.randn(1, 3, k, mllm.hidden_size)
    prefix, _ = engine.prompts.split_for_cache(texts[0], 3)
    ids = torch.tensor([prefix])
    _, cache = mllm.run(ids, ctx, torch.ones_like(ids), use_cache=True)
    cache.batch_repeat_interleave(len(texts))
    suffix_ids, suffix_mask, _ = engine._suffixes(VideoState(None, texts, []), 3)
    attention = torch.cat([suffix_mask.new_ones(len(texts), len(prefix)), suffix_mask], 1)
    cached, _ = mllm.run(suffix_ids, window.expand(len(texts), -1, -1, -1), attention, past_key_values=cache,
                         use_cache=True)
    whole_ids = torch.cat([ids.expand(len(texts), -1), suffix_ids], 1)
    visual = torch.cat([ctx, window], 1).expand(len(texts), -1, -1, -1)
    whole, _ = mllm.run(whole_ids, visual, attention)
    valid = suffix_mask.bool()
    torch.testing.assert_close(cached[valid], whole[:, len(prefix):][valid], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="crop it back"):  # the window's keys were not dropped
        mllm.run(suffix_ids, window.expand(len(texts), -1, -1, -1), attention, past_key_values=cache)


def collect(engine, video, texts, start, reverse):
    out = torch.zeros(len(texts), len(video.frames), 32, 32)
    for r in engine.propagate(engine.open(video, texts), start, reverse):
        out[r.expressions, r.frame] = r.logits
    return out


@pytest.mark.parametrize("start,reverse", [(0, False), (5, True)])
def test_engine_equals_the_faithful_loop_on_qwen(qwen_setup, start, reverse):
    """A key frame's passes (forward from it, backward from it) with the cached engine = the published loop."""
    _, index, _, model, tokenizer = qwen_setup
    groups = index.by_video()
    vid = max(groups, key=lambda v: len(groups[v]))
    video, texts = index.videos[vid], [e.text for e in groups[vid]][:5]
    fast = collect(StreamingEngine(model, tokenizer), video, texts, start, reverse)
    slow = collect(FaithfulLoop(model, tokenizer), video, texts, start, reverse)
    done = pass_frames(len(video.frames), start, reverse)
    assert fast[:, done].flatten(2).abs().amax(-1).min() > 0.01  # real logits on every frame of the pass
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-4)


def test_sparse_mode_and_predict_run_on_qwen(qwen_setup, tmp_path):
    from glus.infer.predict import predict_split
    from glus.infer.sparse import SparseEngine
    from glus.model.vos import VOSBuilder

    _, index, _, model, tokenizer = qwen_setup
    vos, _ = VOSBuilder(sam_config="tiny", sam_image_size=128).build()
    video = index.videos[sorted(index.videos)[0]]
    texts = [e.text for e in index.expressions_of(video.id)][:2]
    engine = StreamingEngine(model, tokenizer)
    dense = {r.frame: r.logits for r in engine.propagate(engine.open(video, texts), 0)}
    sparse = SparseEngine(model, tokenizer, vos.eval(), every=1)  # every frame an anchor: the engine's masks
    same = {r.frame: r.logits for r in sparse.propagate(sparse.open(video, texts), 0)}
    assert sorted(same) == sorted(dense) == list(range(len(video.frames)))
    for t in dense:
        torch.testing.assert_close(same[t], dense[t], rtol=0, atol=0)
    summary = predict_split(model, tokenizer, index, tmp_path / "pred", progress=False)
    assert summary.expressions_written == len(index.expressions)


def _tiny_qwen_folder(folder):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from glus.model.build.qwen import tiny_qwen_config
    from glus.model.mllm.tokenizer import build_tiny_qwen_tokenizer

    tokenizer = build_tiny_qwen_tokenizer()
    torch.manual_seed(3)
    vlm = Qwen2_5_VLForConditionalGeneration(tiny_qwen_config(tokenizer))
    vlm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return vlm


def test_a_saved_qwen_folder_loads_strictly(tmp_path):
    from glus.model.weights.qwen import load_qwen_vl

    saved = _tiny_qwen_folder(tmp_path / "qwen")
    vlm, tokenizer = load_qwen_vl(tmp_path / "qwen")
    ours = vlm.state_dict()
    assert ours.keys() == saved.state_dict().keys()
    for key, value in saved.state_dict().items():
        assert torch.equal(ours[key], value), key
    assert tokenizer.convert_tokens_to_ids("[SEG]") < vlm.get_input_embeddings().weight.shape[0]

    weights = tmp_path / "qwen" / "model.safetensors"
    state = load_file(weights)
    gone = "visual.merger.mlp.0.weight"  # saved in the released layout (visual.*, model.layers.*)
    assert any(k.endswith(gone) for k in state)
    save_file({k: v for k, v in state.items() if not k.endswith(gone)}, weights, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing: .*visual\.merger\.mlp\.0\.weight"):
        load_qwen_vl(tmp_path / "qwen")


def test_a_folder_whose_tokenizer_is_another_models_is_refused(tmp_path):
    import json

    from glus.model.weights.qwen import load_qwen_vl

    _tiny_qwen_folder(tmp_path / "qwen")
    config = json.loads((tmp_path / "qwen" / "config.json").read_text())
    config["image_token_id"] = 3
    (tmp_path / "qwen" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"<\|image_pad\|> is id \d+, config.json's image_token_id is 3"):
        load_qwen_vl(tmp_path / "qwen")


def test_the_folder_builder_trains_lisas_set_on_qwen(tmp_path):
    """LoRA only in the language model's q/v (the vision MLP shares its layer names); the merger, [SEG]'s
    embedding and head rows, the [SEG] projection and the decoder train; the vision blocks do not."""
    from glus.model.build.qwen import QwenGLUSBuilder

    _tiny_qwen_folder(tmp_path / "qwen")
    model, tokenizer = QwenGLUSBuilder(qwen_folder=str(tmp_path / "qwen"), sam_config="tiny", sam_checkpoint=None,
                                       sam_image_size=128, image_size=112, dtype="float32").build()
    names = {n for n, _ in model.named_parameters()}
    lora = sorted(n for n in names if "lora_" in n)
    assert lora and all(".language_model.layers." in n and ("q_proj" in n or "v_proj" in n) for n in lora)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".visual.merger." in n for n in trainable)
    assert not any(".visual.blocks." in n or ".visual.patch_embed." in n for n in trainable)
    batch = synthetic_batch(model, tokenizer, template=model.template)
    model.train()
    out = model(batch)
    model.losses(out, batch)["loss"].backward()
    grad = model.mllm.base_lm.get_input_embeddings().weight.grad
    rows = grad.abs().sum(1).nonzero().flatten().tolist()
    assert rows == [tokenizer.convert_tokens_to_ids("[SEG]")]  # new_rows: only [SEG]'s row moves


@pytest.mark.parametrize("size,released", [("7b", 8.29e9), ("3b", 3.75e9)])
def test_the_7b_and_3b_shapes_are_the_released_models(size, released):
    """On the meta device: the Qwen part's parameters against the released models' sizes (their model cards:
    8.29 B and 3.75 B), LoRA r=8 on q, v counted by hand, and the random-weights builder's model the same."""
    from glus.model.build.qwen import QwenGLUSBuilder, RandomWeightsQwenGLUSBuilder
    from glus.model.build.qwen import QWEN_TEXT

    model, _ = QwenGLUSBuilder(size=size, qwen_folder="/nonexistent").build_on_meta()
    qwen = sum(p.numel() for n, p in model.mllm.named_parameters() if "lora_" not in n)
    assert abs(qwen - released) / released < 0.005
    t = QWEN_TEXT[size]
    head = t["hidden_size"] // t["num_attention_heads"]
    q, v = t["hidden_size"], t["num_key_value_heads"] * head  # output widths of q_proj and v_proj
    per_layer = 8 * t["hidden_size"] * 2 + 8 * (q + v)  # A (r x in) of both + B (out x r) of both
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert lora == t["num_hidden_layers"] * per_layer
    random, _ = RandomWeightsQwenGLUSBuilder(device="meta", size=size).build()
    shapes = {n: (tuple(p.shape), p.requires_grad) for n, p in random.named_parameters()}
    assert shapes == {n: (tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()}
