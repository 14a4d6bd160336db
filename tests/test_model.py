"""The composed GLUS model on tiny configs: gradients, trainable sets, [SEG] positions, pooling, loading."""
import numpy as np
import pytest
import torch

from glus.model.errors import CheckpointError
from glus.model.build.tiny import E2E_MEMORY, tiny_glus, tiny_mllm
from glus.model.mllm import PromptBuilder, build_tiny_tokenizer
from glus.model.mllm.lora import trainable_report
from glus.model.mllm.model import pool_tokens
from glus.model.mllm.prompt import IGNORE_INDEX, pad_right
from tests.model_helpers import synthetic_batch


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def _grads(model):
    return {n: p.grad for n, p in model.named_parameters()}


def _nonzero(grads, pattern):
    hits = [g for n, g in grads.items() if pattern in n]
    assert hits, pattern
    return any(g is not None and g.abs().sum() > 0 for g in hits)


def test_forward_backward_reaches_every_trainable_part():
    model, tok = tiny_glus(segmenter_kwargs={"memory": E2E_MEMORY, "train_high_res_convs": True})
    batch = synthetic_batch(model, tok)
    out = model(batch)
    assert out.mask_logits.shape == (3, 4, 32, 32) and out.seg_embeddings.shape == (3, 4, 32)  # low-res logits
    losses = model.losses(out, batch)
    assert set(losses) == {"ce", "bce", "dice", "loss"} and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    grads = _grads(model)
    for part in ("lora_B", "mllm.projector", "text_hidden_fcs", "sam_mask_decoder.transformer",
                 "sam_mask_decoder.conv_s0", "memory_attention", "memory_encoder", "embed_tokens", "lm_head"):
        assert _nonzero(grads, part), f"no gradient reaches {part}"
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} is trainable but outside the graph"
        else:
            assert p.grad is None, f"{name} is frozen but got a gradient"
    for frozen in ("vision_tower", "image_encoder", "sam_prompt_encoder", "self_attn.q_proj.base_layer"):
        assert all(not p.requires_grad for n, p in model.named_parameters() if frozen in n)


def test_trainable_counts_per_configuration():
    model, tok = tiny_glus(segmenter_kwargs={"memory": E2E_MEMORY})
    report = trainable_report(model)
    cfg = model.mllm.lm_config
    d, layers, r = cfg.hidden_size, cfg.num_hidden_layers, 8
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    assert report["mllm.language_model.layers.lora"][0] == layers * r * ((d + d) + (d + kv))  # q_proj + v_proj
    assert report["mllm.language_model.embed_tokens"] == (len(tok) * d, len(tok) * d)
    assert report["mllm.language_model.layers"][0] == 0 and report["mllm.vision_tower"][0] == 0
    assert report["segmenter.sam.image_encoder"][0] == 0
    sam = model.segmenter.sam
    assert report["segmenter.sam.memory_attention"][0] == sum(p.numel() for p in sam.memory_attention.parameters())
    # the published GLUS: memory frozen and run without gradients; no LoRA, no embeddings -> LM frozen
    published, _ = tiny_glus(lora=False, embeddings="none", lm_head=False)
    rep = trainable_report(published)
    assert rep["segmenter.sam.memory_attention"][0] == rep["segmenter.sam.memory_encoder"][0] == 0
    assert all(t == 0 for k, (t, _) in rep.items() if k.startswith("mllm.language_model"))
    assert rep["segmenter.sam.sam_mask_decoder"][0] > 0 and rep["text_hidden_fcs.0"][0] > 0


@pytest.mark.parametrize("end_to_end", [True, False])
def test_gradients_flow_through_memories_of_earlier_frames(end_to_end):
    memory = E2E_MEMORY if end_to_end else None  # None: the published bank
    model, tok = tiny_glus(segmenter_kwargs={"memory": memory})
    batch = synthetic_batch(model, tok, videos=(0,), exps_per_video=(1,))
    out = model(batch)
    seg = out.seg_embeddings
    seg.retain_grad()
    out.mask_logits[:, -1].sum().backward()  # a loss on the last query frame only
    earlier = seg.grad[:, :-1].abs().sum()
    encoder = sum(p.grad.abs().sum() for p in model.segmenter.sam.memory_encoder.parameters() if p.grad is not None)
    if end_to_end:  # the last frame's mask depends on the [SEG] prompts of earlier frames via memory
        assert earlier > 0 and encoder > 0
    else:  # the published behaviour: memories are written without gradient
        assert earlier == 0 and encoder == 0


@pytest.mark.parametrize("num_query", [1, 2, 3, 4])
def test_seg_positions_for_query_rounds_and_mixed_lengths(tokenizer, num_query):
    builder = PromptBuilder(tokenizer, tokens_per_frame=64)
    texts = ["the red circle", "the two blue squares moving left and then stopping near the grey bar."]
    items = [builder.build(t, num_query, np.random.default_rng(i)) for i, t in enumerate(texts)]
    batch = builder.collate(items, num_query)
    assert batch.seg_positions.shape == (2, num_query)
    for row, item in enumerate(items):
        ids = batch.input_ids[row]
        assert torch.all(ids[batch.seg_positions[row]] == builder.seg_id)
        assert torch.all(batch.seg_positions[row][1:] > batch.seg_positions[row][:-1])
        assert (ids == builder.image_id).sum() == (4 + num_query) * 64  # context + query frames
        targets = batch.labels[row][batch.labels[row] != IGNORE_INDEX]
        assert targets.tolist() == [builder.seg_id] * num_query  # CE at [SEG] only (published)
        assert batch.attention_mask[row].sum() == len(item["input_ids"])
    with pytest.raises(ValueError, match="expected 5"):
        builder.seg_positions(batch.input_ids, batch.attention_mask, 5)


def test_prompt_text_is_the_published_template_word_for_word(tokenizer):
    builder = PromptBuilder(tokenizer, tokens_per_frame=4, label_mode="answer")  # template: published
    item = builder.build("The Red Circle.", 2)
    text = tokenizer.decode([i for i in item["input_ids"] if i >= 0])
    # published inference_iter.py: CONTEXT_INFO_LIST[0], SHORT_QUESTION_LIST[0], the forced answer, llava_v1
    assert text.startswith("<s>A chat between a curious human and an artificial intelligence assistant. "
                           "The assistant gives helpful, detailed, and polite answers to the human's questions. USER: ")
    assert "<im_end>\nPlease finished the following tasks on the context frames above.\n<im_start>" in text
    round_text = ("<im_end>\nCan you segment the the red circle in this frame? ASSISTANT: "
                  "Sure, the segmentation result is [SEG].</s>")
    assert text.count(round_text) == 2 and text.endswith(round_text)
    labels = [l for l in item["labels"] if l != IGNORE_INDEX]
    assert labels.count(builder.seg_id) == 2 and labels.count(tokenizer.eos_token_id) == 2
    # training draws every published question and answer: the lists of the published utils/utils.py
    # (SHORT_QUESTION_LIST, ANSWER_LIST), copied here by hand from GLUS-video/GLUS as the independent oracle
    published_questions = {"Can you segment the a cat in this frame?", "Please segment the a cat in this frame.",
                           "What is a cat in this frame? Please respond with segmentation mask.",
                           "What is a cat in this frame? Please output segmentation mask."}
    published_answers = {"It is [SEG].", "Sure, [SEG].", "Sure, it is [SEG].",
                         "Sure, the segmentation result is [SEG].", "[SEG]."}
    drawn = {tokenizer.decode([i for i in builder.build("a cat", 1, np.random.default_rng(k))["input_ids"]
                               if i >= 0]).split("<im_end>\n")[-1] for k in range(200)}
    assert {d.split(" ASSISTANT: ")[1].removesuffix("</s>") for d in drawn} == published_answers
    assert {d.split(" ASSISTANT: ")[0] for d in drawn} == published_questions
    readable = PromptBuilder(tokenizer, tokens_per_frame=4, template="readable").build("The Red Circle.", 1)
    assert "Can you segment the red circle in this frame? ASSISTANT: It is [SEG]." in tokenizer.decode(
        [i for i in readable["input_ids"] if i >= 0])
    with pytest.raises(ValueError, match="unknown prompt template"):
        PromptBuilder(tokenizer, template="lisa")


def test_visual_token_pooling():
    x = torch.arange(16 * 16, dtype=torch.float).view(1, 256, 1)
    strip = pool_tokens(x, "strip", 4)
    assert strip.shape == (1, 64, 1) and strip[0, 0, 0] == 1.5  # mean of raster tokens 0..3
    square = pool_tokens(x, "2x2", 4)
    assert square.shape == (1, 64, 1) and square[0, 0, 0] == (0 + 1 + 16 + 17) / 4  # a 2x2 patch block
    mllm, _ = tiny_mllm()
    assert mllm.tokens_per_frame() == 64  # 224 px, patch 14: 256 patches -> 64 tokens


def test_lisa_layout_folder_loads_and_matches(tmp_path, tokenizer):
    from glus.model.weights.lisa import load_lisa, save_lisa_layout

    mllm, tok = tiny_mllm(tokenizer, seed=3)
    clip_dir = tmp_path / "clip"
    mllm.vision_tower.save_pretrained(str(clip_dir))
    seg_fc = {"text_hidden_fcs.0.0.weight": torch.randn(64, 64), "text_hidden_fcs.0.0.bias": torch.zeros(64),
              "text_hidden_fcs.0.2.weight": torch.randn(256, 64), "text_hidden_fcs.0.2.bias": torch.zeros(256)}
    save_lisa_layout(mllm, tok, tmp_path / "lisa", seg_fc=seg_fc, mm_vision_tower=str(clip_dir))
    loaded, tok2, seg_fc2 = load_lisa(tmp_path / "lisa")
    assert tok2.convert_tokens_to_ids("[SEG]") == tok.convert_tokens_to_ids("[SEG]")
    assert torch.equal(seg_fc2["text_hidden_fcs.0.2.weight"], seg_fc["text_hidden_fcs.0.2.weight"])
    builder = PromptBuilder(tok, tokens_per_frame=64)
    prompts = builder.collate([builder.build("the red circle", 2)], 2)
    frames = torch.randint(0, 255, (6, 120, 160, 3), dtype=torch.uint8)
    outs = []
    for m in (mllm.eval(), loaded.eval()):
        with torch.no_grad():
            visual = m.encode_frames(m.preprocess(frames))[None]
            hidden, _ = m.hidden_states(m.embed(prompts.input_ids, visual), prompts.attention_mask)
        outs.append(hidden)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    # a CLIP tower kept outside the folder is loaded by name from mm_vision_tower
    save_lisa_layout(mllm, tok, tmp_path / "lisa_noclip", clip_inside=False, mm_vision_tower=str(clip_dir))
    assert torch.equal(load_lisa(tmp_path / "lisa_noclip")[0].projector[0].weight, mllm.projector[0].weight)


def test_incomplete_or_corrupt_lisa_folder_is_named(tmp_path, tokenizer):
    from safetensors.torch import load_file, save_file

    from glus.model.weights.lisa import load_lisa, save_lisa_layout

    with pytest.raises(CheckpointError, match="(?s)checkpoint folder not found.*expected a LISA-7B-v1 folder"):
        load_lisa(tmp_path / "nowhere")
    mllm, tok = tiny_mllm(tokenizer)
    clip_dir = tmp_path / "clip"
    mllm.vision_tower.save_pretrained(str(clip_dir))
    folder = tmp_path / "lisa"
    save_lisa_layout(mllm, tok, folder, mm_vision_tower=str(clip_dir))
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    del state["model.layers.1.self_attn.v_proj.weight"]
    state["model.mystery.weight"] = torch.zeros(1)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError) as err:
        load_lisa(folder)
    message = str(err.value)
    assert "missing: language_model.model.layers.1.self_attn.v_proj.weight" in message
    assert "unexpected: language_model.model.mystery.weight" in message
    weights.unlink()
    with pytest.raises(CheckpointError, match="no weight files"):
        load_lisa(folder)


def test_new_token_rows_only():
    model, tok = tiny_glus(embeddings="new_rows")
    batch = synthetic_batch(model, tok, videos=(0,), exps_per_video=(1,))
    model.losses(model(batch), batch)["loss"].backward()
    new = tok.convert_tokens_to_ids(["[SEG]", "<im_start>", "<im_end>"])
    for weight in (model.mllm.base_lm.get_input_embeddings().weight, model.mllm.base_lm.get_output_embeddings().weight):
        grad = weight.grad
        old = torch.ones(len(grad), dtype=torch.bool)
        old[new] = False
        assert grad[old].abs().sum() == 0 and grad[new].abs().sum() > 0


def test_dice_and_bce_hand_cases():
    from glus.model.losses import bce_per_mask, dice_per_mask

    target = torch.zeros(1, 4, 4)
    target[0, :2, :2] = 1
    perfect = torch.where(target > 0, 30.0, -30.0)
    assert dice_per_mask(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    half = torch.zeros(1, 4, 4)  # p = 0.5 everywhere: dice = 2 * 0.5 * 4 / (0.5 * 16 + 4) = 1/3
    assert dice_per_mask(half, target).item() == pytest.approx(1 - 1 / 3, abs=1e-4)
    assert dice_per_mask(torch.full((1, 4, 4), -30.0), torch.zeros(1, 4, 4)).item() == pytest.approx(0.0, abs=1e-3)
    assert bce_per_mask(half, target).item() == pytest.approx(np.log(2), abs=1e-6)


def test_expression_loss_hand_case_and_wiring(tokenizer):
    from glus.model.glus import GLUS
    from glus.model.losses import LossWeights, expression_loss

    # 1 expression, 2 query frames, vocabulary of 3; tokens [2, 0] and one padding slot
    log_probs = torch.log(torch.tensor([[[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]]))
    ids = torch.tensor([[2, 0, IGNORE_INDEX]])
    want = -(np.log(0.5) + np.log(0.2) + np.log(0.1) + np.log(0.6)) / 4
    assert expression_loss(log_probs, ids).item() == pytest.approx(want, rel=1e-6)

    builder = PromptBuilder(tokenizer, tokens_per_frame=16)
    spelled = builder.expression_tokens("Red circle moving left.")
    prompt = builder.build("Red circle moving left.", 1)["input_ids"]
    assert any(prompt[i:i + len(spelled)] == spelled for i in range(len(prompt)))  # as the prompt spells it

    model, tok = tiny_glus()
    base = model.text_hidden_fcs[0][2].weight.detach().clone()
    gained = GLUS(model.mllm, model.segmenter, LossWeights(expression=1.0), seg_projection_gain=5.0)
    assert (gained.text_hidden_fcs[0][2].weight.norm() / base.norm()).item() == pytest.approx(5.0, rel=0.2)
    batch = synthetic_batch(gained, tok)
    with pytest.raises(ValueError, match="expression_ids"):
        gained.losses(gained(batch), batch)
    batch.expression_ids, _ = pad_right(
        [builder.expression_tokens("the red circle"), builder.expression_tokens("the blue square moving up")],
        IGNORE_INDEX)
    batch.expression_ids = torch.cat([batch.expression_ids, batch.expression_ids[:1]])
    losses = gained.losses(gained(batch), batch)
    assert losses["expression"] > 0
    losses["expression"].backward()
    assert _nonzero(_grads(gained), "lora_B") and _nonzero(_grads(gained), "lm_head")
