"""Other towers and LMs, the LLaVA-1.5 loader against transformers' own Llava, SAM-2 builds, 7B shapes."""
import pytest
import torch
from transformers import (LlavaConfig, LlavaForConditionalGeneration, Qwen2Config, Qwen2ForCausalLM,
                          SiglipVisionConfig, SiglipVisionModel)

from glus.model.errors import CheckpointError
from glus.model.build.published import glus_7b_on_meta
from glus.model.build.tiny import tiny_clip_config, tiny_llama_config
from glus.model.mllm import MultimodalLM, PromptBuilder, VisionLanguageConfig, build_tiny_tokenizer
from glus.model.mllm.lora import trainable_report
from glus.model.segmenter.build import build_sam2_model, load_sam2_checkpoint


def test_llava15_folder_gives_transformers_llava_logits(tmp_path):
    from glus.model.weights.lisa import load_llava

    tok = build_tiny_tokenizer()
    image_token = len(tok)  # transformers' Llava needs an in-vocabulary image token id
    torch.manual_seed(0)
    cfg = LlavaConfig(vision_config=tiny_clip_config(), text_config=tiny_llama_config(len(tok) + 1),
                      image_token_index=image_token, vision_feature_layer=-2,
                      vision_feature_select_strategy="default", projector_hidden_act="gelu")
    hf = LlavaForConditionalGeneration(cfg).eval()
    hf.save_pretrained(str(tmp_path / "llava"))
    tok.save_pretrained(str(tmp_path / "llava"))
    ours, tok2 = load_llava(tmp_path / "llava", vl=VisionLanguageConfig(select_layer=-2, projector="mlp2x_gelu",
                                                                        pooling="none"))
    assert len(tok2) == len(tok)  # GLUS' tokens were already there: nothing resized
    builder = PromptBuilder(tok2, tokens_per_frame=ours.tokens_per_frame(), num_context=1)
    prompts = builder.collate([builder.build("the red circle", 1)], 1)
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        hidden, _ = ours.eval().hidden_states(ours.embed(prompts.input_ids, ours.encode_frames(pixels)[None]),
                                              prompts.attention_mask)
        mine = ours.logits_at(hidden)
        hf_ids = prompts.input_ids.masked_fill(prompts.input_ids == builder.image_id, image_token)
        theirs = hf(input_ids=hf_ids, pixel_values=pixels, attention_mask=prompts.attention_mask).logits
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def test_qwen2_language_model_and_siglip_tower_compose():
    tok = build_tiny_tokenizer()
    vision = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                  num_attention_heads=2, image_size=224, patch_size=14))
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    mllm = MultimodalLM(vision, lm, VisionLanguageConfig(pooling="2x2", projector="mlp2x_gelu"))
    assert not mllm.drop_cls and mllm.tokens_per_frame() == 64
    builder = PromptBuilder(tok, tokens_per_frame=64)
    prompts = builder.collate([builder.build("the red circle", 2)], 2)
    visual = mllm.encode_frames(torch.randn(6, 3, 224, 224))
    assert visual.shape == (6, 64, 64)
    hidden, _ = mllm.hidden_states(mllm.embed(prompts.input_ids, visual[None]), prompts.attention_mask)
    assert hidden.shape == (1, prompts.input_ids.shape[1], 64) and torch.isfinite(hidden).all()


def test_packaged_sam2_configs_build():
    # Hiera-T 39.0M, B+ 80.9M, L 224.4M parameters (SAM 2.1 adds a few small embeddings to SAM 2)
    for name, params in (("sam2.1_hiera_t", 38_962_498), ("sam2_hiera_b+", 80_833_666),
                         ("sam2.1_hiera_l", 224_446_642)):
        model = build_sam2_model(name, image_size=512)
        assert sum(p.numel() for p in model.parameters()) == params, name
        assert model.image_size == 512
    with pytest.raises(ValueError, match="multiple of 32"):
        build_sam2_model("tiny", image_size=100)


def test_sam2_checkpoint_loads_strictly(tmp_path):
    torch.manual_seed(0)
    model = build_sam2_model("tiny")
    path = tmp_path / "sam2.pt"
    torch.save({"model": model.state_dict()}, path)
    torch.manual_seed(1)
    other = build_sam2_model("tiny", checkpoint=str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    state = model.state_dict()
    state.pop("memory_encoder.out_proj.weight")
    state["surplus.weight"] = torch.zeros(1)
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as err:
        load_sam2_checkpoint(other, str(path))
    assert "missing: memory_encoder.out_proj.weight" in str(err.value) and "unexpected: surplus.weight" in str(err.value)
    with pytest.raises(CheckpointError, match="not found.*checkpoints/README.md"):
        load_sam2_checkpoint(other, str(tmp_path / "absent.pt"))


def test_7b_configuration_on_the_meta_device():
    model = glus_7b_on_meta()
    report = trainable_report(model)
    total = sum(n for _, n in report.values())
    trainable = sum(t for t, _ in report.values())
    assert report["mllm.language_model.layers.lora"][0] == 32 * 2 * 8 * (4096 + 4096)  # 4.19M
    assert report["mllm.projector"][0] == 1024 * 4096 + 4096
    assert report["text_hidden_fcs.0"][0] == 4096 * 4096 + 4096 + 4096 * 256 + 256
    assert 6.9e9 < total < 7.4e9 and trainable < 0.1 * total
    assert all(p.device.type == "meta" for p in model.parameters())
