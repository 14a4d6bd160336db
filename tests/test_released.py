"""Released GLUS folders (Swindl/GLUS-S, -S-partial, -A): the published layout, written from our module trees in
tiny shapes, loads back tensor for tensor, predicts exactly as our own export of the same weights, and every
mismatch (a missing shard, a missing or an unexpected key, a wrong SAM-2 config) is named."""
import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from glus.model.errors import CheckpointError
from glus.model.build.published import published_glus
from glus.model.build.tiny import tiny_mllm
from glus.model.mllm.tokenizer import SPECIAL_TOKENS
from glus.model.weights.load import load_export, load_model
from glus.model.weights.released import is_released_folder, load_released, save_released_layout
from tests.fixtures import mevis_layout

SEED = 3
TINY = {"sam_config": "tiny", "sam_image_size": 128}


def persistent_buffers(model) -> dict:
    params = dict(model.named_parameters())
    return {k: t for k, t in model.state_dict().items() if k not in params and t.is_floating_point()}


class TinyPublishedBuilder:
    """The recipe builder of the reference export: the tiny published-settings GLUS from fixed seeds. Its persistent
    buffers (SAM-2's random positional encoding) are redrawn from a seed, so the export rebuilds them and a loader
    that left them at their initial values would fail."""

    def __init__(self, seed: int = SEED):
        self.seed = seed

    def build(self):
        mllm, tokenizer = tiny_mllm(seed=self.seed)
        torch.manual_seed(self.seed + 1)
        model = published_glus(mllm, **TINY)
        gen = torch.Generator().manual_seed(self.seed + 2)
        with torch.no_grad():
            for buf in persistent_buffers(model).values():
                buf.copy_(torch.randn(buf.shape, generator=gen))
        return model, tokenizer


def read_index(folder) -> dict:
    return json.loads(next(folder.glob("*.index.json")).read_text())


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("released")


@pytest.fixture(scope="module")
def trained(base):
    """The model as after training: every parameter moved away from its initial value."""
    model, tokenizer = TinyPublishedBuilder().build()
    model.mllm.vision_tower.save_pretrained(str(base / "stale-clip"))  # right config, initial (wrong) weights
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    # where the published config's mm_vision_tower (openai/clip-vit-large-patch14) points under checkpoints/
    model.mllm.vision_tower.save_pretrained(str(base / "checkpoints" / "clip-vit-large-patch14"))
    return model.eval(), tokenizer


def write_and_load(base, trained, fmt, shards, clip_inside=False, rotary=False):
    model, tokenizer = trained
    folder = save_released_layout(model, tokenizer, base / f"{fmt}-{shards}{'-clip-inside' if clip_inside else ''}",
                                  shards=shards, format=fmt, clip_inside=clip_inside, rotary_buffers=rotary)
    # CLIP inside: only the tower's config comes from a folder, whose weights are stale on purpose
    clip = {"clip_folder": str(base / "stale-clip")} if clip_inside else {"checkpoints": base / "checkpoints"}
    loaded, tok, info = load_released(folder, **TINY, **clip)
    return SimpleNamespace(folder=folder, model=loaded, tokenizer=tok, info=info, fmt=fmt, shards=shards,
                           clip_inside=clip_inside, rotary=rotary)


@pytest.fixture(scope="module", params=[
    pytest.param(("bin", 3, False, True), id="bin-3-shards-clip-folder-rotary-buffers"),
    pytest.param(("safetensors", 3, False, False), id="safetensors-3-shards-clip-folder"),
    pytest.param(("safetensors", 2, True, False), id="safetensors-2-shards-clip-inside"),
])
def released(request, base, trained):
    return write_and_load(base, trained, *request.param)


def test_the_folder_has_the_published_layout(released, trained):
    from glus.model.segmenter.build import build_sam2_model

    folder, model = released.folder, trained[0]
    index = read_index(folder)
    files = sorted(p.name for p in folder.glob(f"*.{released.fmt}"))
    stem = "pytorch_model" if released.fmt == "bin" else "model"
    assert files == [f"{stem}-{i:05d}-of-{released.shards:05d}.{released.fmt}" for i in range(1, released.shards + 1)]
    assert sorted(set(index["weight_map"].values())) == files and released.info["files"] == files
    keys = set(index["weight_map"])
    # the names the published classes give, each part from a module built apart from ours
    sam = {"model.visual_model." + k for k in build_sam2_model("tiny", 128).state_dict()}
    llama = set(tiny_mllm(seed=0)[0].language_model.state_dict())  # model.embed_tokens, model.layers.*, lm_head
    projector = {"model.mm_projector.weight", "model.mm_projector.bias"}
    seg_fc = {f"model.text_hidden_fcs.0.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    clip = {k for k in keys if k.startswith("model.vision_tower.vision_tower.vision_model.")}
    rotary = {k for k in keys if k.endswith(".self_attn.rotary_emb.inv_freq")}
    assert keys - clip - rotary == sam | llama | projector | seg_fc
    assert len(clip) == (len(model.mllm.vision_tower.state_dict()) if released.clip_inside else 0)
    assert len(rotary) == (model.mllm.lm_config.num_hidden_layers if released.rotary else 0)
    total = 0
    for name in files:
        part = load_file(str(folder / name)) if released.fmt == "safetensors" else torch.load(folder / name)
        total += sum(t.numel() * t.element_size() for t in part.values())
    assert index["metadata"]["total_size"] == total
    assert is_released_folder(folder)


def test_every_tensor_loads_exactly(released, trained):
    model = trained[0]
    for ours, theirs in ((model.state_dict(), released.model.state_dict()),
                         (dict(model.named_buffers()), dict(released.model.named_buffers()))):  # + non-persistent
        assert set(ours) == set(theirs)
        assert [k for k in ours if not torch.equal(ours[k], theirs[k])] == []
    assert not released.model.training
    assert released.tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == \
        trained[1].convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert released.info["rotary_buffers_checked"] == (model.mllm.lm_config.num_hidden_layers if released.rotary else 0)


@pytest.fixture(scope="module")
def exported(base, trained):
    """The same weights through our own export: every parameter in heads.safetensors, the builder for the rest."""
    from glus.model.weights.export import export_model

    model, tokenizer = trained
    spec = {"class_path": f"{__name__}.TinyPublishedBuilder", "init_args": {"seed": SEED}}
    recipe = {"model": {"class_path": "glus.train.module.GLUSModule", "init_args": {"builder": spec}}}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(True)  # an export holds the trained parameters: here, all of them
    try:
        folder = export_model(model, tokenizer, base / "export", recipe)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    loaded, tok, _ = load_export(folder)
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert [k for k in ours if not torch.equal(ours[k], theirs[k])] == []  # else the comparison below means nothing
    return loaded, tok


@pytest.fixture(scope="module")
def split(base):
    from glus.data.cache import load_split

    return load_split(mevis_layout(base / "data", "valid_u").parent, "mevis/valid_u")


def engine_logits(model, tokenizer, split) -> torch.Tensor:
    from glus.infer.engine import StreamingEngine

    engine = StreamingEngine(model, tokenizer)
    out = []
    for vid, exps in split.by_video().items():
        video = split.videos[vid]
        logits = torch.zeros(len(exps), len(video.frames), 32, 32)  # low-resolution logits of the 128-px SAM-2
        for r in engine.run(video, [e.text for e in exps]):
            logits[r.expressions, r.frame] = r.logits
        out.append(logits)
    return torch.cat(out)


def test_predictions_equal_those_of_our_export(base, trained, exported, split):
    """The streaming engine (what `glus predict` runs) gives bit-identical mask logits for every frame and
    expression. On the published format (sharded .bin, CLIP from its folder); the other layouts load the same
    tensors (test_every_tensor_loads_exactly)."""
    released = write_and_load(base, trained, "bin", 2)
    reference = engine_logits(*exported, split)
    assert reference.std() > 0.01  # real, varying logits
    assert torch.equal(engine_logits(released.model, released.tokenizer, split), reference)


def test_glus_predict_takes_a_released_folder_directly(base, trained, exported, split, tmp_path):
    """`glus predict --ckpt FOLDER`: the released folder (sam config and CLIP folder from the options) writes
    the same PNGs as our export of the same weights."""
    from glus.cli import main
    from glus.infer.predict import predict_split

    released = base / "bin-3"  # the published format, written by the `released` fixture when it ran first
    if not released.is_dir():
        released = write_and_load(base, trained, "bin", 3, rotary=True).folder
    root = str(mevis_layout(base / "data", "valid_u").parent)  # as the `split` fixture reads it
    args = ["predict", "--ckpt", str(released), "--sam-config", "tiny", "--sam-image-size", "128", "--clip-folder",
            str(base / "checkpoints" / "clip-vit-large-patch14"), "--data", "mevis/valid_u", "--root", root,
            "--out", str(tmp_path / "released"), "--quiet"]
    assert main(args) == 0
    predict_split(*exported, split, tmp_path / "export", progress=False)
    pngs = sorted(p.relative_to(tmp_path / "export") for p in (tmp_path / "export").rglob("*.png"))
    assert pngs and pngs == sorted(p.relative_to(tmp_path / "released") for p in (tmp_path / "released").rglob("*.png"))
    assert all((tmp_path / "export" / p).read_bytes() == (tmp_path / "released" / p).read_bytes() for p in pngs)
    assert load_model(released, sam_config="tiny", sam_image_size=128,
                      clip_folder=str(base / "checkpoints" / "clip-vit-large-patch14"))[2]["released"]


# ---- every mismatch is named ------------------------------------------------------------------------------

def write(trained, folder, **kw):
    return save_released_layout(*trained, folder, **kw)


def load(folder, base):
    return load_released(folder, **TINY, checkpoints=base / "checkpoints")


def test_a_missing_shard_is_named(trained, base):
    folder = write(trained, base / "err-shard", shards=3, format="bin")
    (folder / "pytorch_model-00002-of-00003.bin").unlink()
    assert is_released_folder(folder)  # the index says what it is; loading says what is missing
    with pytest.raises(CheckpointError, match=r"missing.*pytorch_model-00002-of-00003\.bin"):
        load(folder, base)
    (folder / "pytorch_model.bin.index.json").unlink()  # no index: the file names still give it away
    with pytest.raises(CheckpointError, match=r"shard\(s\) \[2\] of 3 are missing"):
        load(folder, base)


def edit_shard(folder, key, value=None):
    """Remove `key` from (value None) or add it to the first shard, index included."""
    index_path = next(folder.glob("*.index.json"))
    index = json.loads(index_path.read_text())
    name = index["weight_map"].pop(key) if value is None else sorted(set(index["weight_map"].values()))[0]
    state = load_file(str(folder / name))
    if value is None:
        del state[key]
    else:
        state[key] = value
        index["weight_map"][key] = name
    save_file(state, str(folder / name), metadata={"format": "pt"})
    index_path.write_text(json.dumps(index))


def test_unexpected_and_missing_keys_are_named(trained, base):
    folder = write(trained, base / "err-keys", shards=2)
    edit_shard(folder, "model.visual_model.extra_head.weight", torch.zeros(3))
    edit_shard(folder, "model.text_hidden_fcs.0.2.bias")
    with pytest.raises(CheckpointError) as err:
        load(folder, base)
    message = str(err.value)
    assert "unexpected: model.visual_model.extra_head.weight" in message
    assert "missing: model.text_hidden_fcs.0.2.bias" in message
    assert "sam_config='tiny'" in message and "expected a released GLUS folder" in message


def test_a_shard_that_disagrees_with_its_index_is_named(trained, base):
    folder = write(trained, base / "err-index", shards=2)
    index = read_index(folder)
    name = index["weight_map"]["lm_head.weight"]
    state = load_file(str(folder / name))
    del state["lm_head.weight"]
    save_file(state, str(folder / name), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"(?s){name} against its index.*missing: lm_head\.weight"):
        load(folder, base)


def test_a_wrong_sam_config_is_named(trained, base, tmp_path):
    from omegaconf import OmegaConf

    from glus.model.segmenter.build import sam2_config

    folder = write(trained, base / "err-sam", shards=1)
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.index.json"))
    with pytest.raises(CheckpointError, match=r"out_dim 32 \(the \[SEG\] prompt size\) but SAM-2 config 'tiny-64'"):
        load_released(folder, sam_config="tiny-64", sam_image_size=128, checkpoints=base / "checkpoints")
    # a config without a parameter the folder holds (SAM-2.0 against 2.1), and another Hiera width (other shapes)
    narrower = {"image_encoder": {"trunk": {"embed_dim": 16}, "neck": {"backbone_channel_list": [128, 64, 32, 16]}}}
    for change, what in (({"no_obj_embed_spatial": False}, r"unexpected: model\.visual_model\.no_obj_embed_spatial"),
                         (narrower, r"model\.visual_model\.image_encoder\.neck\.convs\.0\.conv\.weight "
                                    r"\(model\.safetensors\): shape")):
        config = tmp_path / "other-sam.yaml"
        OmegaConf.save(OmegaConf.merge(sam2_config("tiny"), {"model": change}), config)
        with pytest.raises(CheckpointError, match=rf"(?s){what}.*sam_config='{config}'.*'sam2_hiera_l'"):
            load_released(folder, sam_config=str(config), sam_image_size=128, checkpoints=base / "checkpoints")


def test_a_tokenizer_without_the_glus_tokens_is_refused(trained, base):
    folder = write(trained, base / "err-tokenizer", shards=2)
    for name, field in (("tokenizer.json", "added_tokens"), ("tokenizer_config.json", "added_tokens_decoder")):
        data = json.loads((folder / name).read_text())
        if field in data:  # [SEG] gone, so adding it would need an embedding row the folder does not have
            entries = data[field]
            data[field] = ([t for t in entries if t["content"] != "[SEG]"] if isinstance(entries, list)
                           else {k: t for k, t in entries.items() if t["content"] != "[SEG]"})
        (folder / name).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"the tokenizer lacks \['\[SEG\]'\]"):
        load(folder, base)


def test_lisa_folders_and_lora_models_are_refused(trained, base, tmp_path):
    from glus.model.weights.lisa import save_lisa_layout
    from glus.model.mllm.lora import apply_lora

    model, tokenizer = trained
    lisa = tmp_path / "lisa"
    save_lisa_layout(model.mllm, tokenizer, lisa, clip_inside=False)
    assert not is_released_folder(lisa) and not is_released_folder(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no model.visual_model.sam_mask_decoder"):
        load(lisa, base)
    lora_model, tok = TinyPublishedBuilder().build()
    apply_lora(lora_model.mllm)
    with pytest.raises(CheckpointError, match="merge_and_unload"):
        save_released_layout(lora_model, tok, tmp_path / "lora")
