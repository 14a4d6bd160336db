"""Streamed synthetic clips (glus.data.synth.stream): each sample a new scene, cut as the written data is read,
and the motion stage that trains on them."""
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from glus.data.clips import ClipSpec

from glus.data.frames import load_frames
from glus.data.synth.stream import SPLIT, StreamedClipDataset, StreamedVOSClipDataset, jpeg_round_trip, objects_union
from glus.data.synth.video import make_video
from glus.data.synth.writer import write_mevis_split
from glus.train.module import name_words, place
from glus.vocabulary import DENSE_LABELS

ROOT = Path(__file__).resolve().parents[1]
SPEC = ClipSpec(clip_size=112, clip_resize="squash", sam_size=128, max_expressions=4, object_motions=True,
                object_labels="object")


def test_a_streamed_scene_reads_as_the_same_scene_written_to_disk(tmp_path):
    """Frames (JPEG round trip) and every expression's masks equal what the MeViS reader gets from the written
    scene; the stream's scenes are none of the written splits'."""
    from glus.data.cache import load_split
    from glus.data.masks import MaskReader

    video = make_video(0, "stream", 3)
    write_mevis_split(tmp_path, "train", [video], with_masks=True)
    split = load_split(tmp_path, "mevis/train")
    written = split.videos[video.vid]
    frames = range(len(video.frames))
    np.testing.assert_array_equal(load_frames(written, frames), np.stack([jpeg_round_trip(f) for f in video.frames]))
    reader = MaskReader(split)
    exprs = split.by_video()[video.vid]
    assert [e.text for e in exprs] == [r.text for r in video.referrals]
    for e, ref in zip(exprs, video.referrals):
        np.testing.assert_array_equal(reader.targets(e, list(frames)),
                                      objects_union(video, ref.obj_ids, list(frames)))
    assert all(not np.array_equal(make_video(0, s, 3).frames[0], video.frames[0]) for s in ("train", "valid_u"))


def test_each_sample_is_a_function_of_its_index_with_captions_and_the_scenes_labels():
    data = StreamedClipDataset(16, SPEC, seed=0, data_seed=0)
    a, b, again = data[5], data[6], data[5]
    assert torch.equal(a["clip"], again["clip"]) and a["texts"] == again["texts"]
    assert not torch.equal(a["clip"], b["clip"])
    video = make_video(0, "stream", 5)
    by_text = {r.text: r for r in video.referrals}
    assert 1 <= len(a["texts"]) <= 4 and a["ids"][0][0] == SPLIT
    for text, caption, ids, masks in zip(a["texts"], a["captions"], a["ids"], a["masks"]):
        assert by_text[text].caption == caption and ids[3] == tuple(sorted(by_text[text].obj_ids))
        assert masks.shape == (4, 120, 160) and masks.dtype == torch.bool
    objects = video.scene.objects
    assert a["object_masks"].shape == (8, len(objects), 112, 112)
    assert [DENSE_LABELS["object"][k] for k in a["object_motions"].tolist()] == [
        (o.colour, o.shape, o.motion) for o in objects]


def test_a_streamed_vos_clip_holds_the_written_scenes_frames_and_object_masks(tmp_path):
    """The segmenter stage's samples: the frames and each chosen object's masks equal what the MeViS reader gets
    from the same scene written to disk; the objects are visible on the clip's first frame; the frames step by
    one stride within max_skip; a clicks/box prompt comes with each sample when asked."""
    from glus.data.cache import load_split
    from glus.data.masks import MaskReader
    from glus.data.vos_clips import VOSClipSpec, video_objects

    spec = VOSClipSpec(num_frames=6, max_objects=3, max_skip=3, sam_size=128, prompts={"clicks": 1.0})
    data = StreamedVOSClipDataset(64, spec, seed=0, data_seed=0)
    strides, sizes = set(), set()
    for i in range(6):
        item, video = data[i], make_video(0, "stream", i)
        write_mevis_split(tmp_path / str(i), "train", [video], with_masks=True)
        split = load_split(tmp_path / str(i), "mevis/train")
        reader, frames = MaskReader(split), item["frames"]
        named = {str(o): (e, o) for e, o in video_objects(split.by_video()[video.vid])}
        expected = np.stack([np.stack([reader.object_mask(*named[o], f) for f in frames]) for o in item["objects"]])
        np.testing.assert_array_equal(item["masks"].numpy(), expected)
        assert expected[:, 0].reshape(len(expected), -1).any(1).all()
        n = len(video.frames)  # a video shorter than the clip's span stops at its last frame
        stride = [s for s in (1, 2, 3) if frames == [min(frames[0] + k * s, n - 1) for k in range(6)]]
        assert stride, frames
        strides.add(stride[0])
        sizes.add(len(item["objects"]))
        np.testing.assert_array_equal(load_frames(split.videos[video.vid], frames)[0],
                                      jpeg_round_trip(video.frames[frames[0]]))
        coords, labels = item["points"]
        assert coords.shape[:2] == labels.shape and labels.shape[0] == len(item["objects"])
        assert torch.equal(data[i]["masks"], item["masks"])
    assert len(strides) > 1 and max(sizes) <= 3  # the strides vary


def test_the_streamed_motion_stage_trains_on_the_samples_captions(tmp_path):
    """Two steps of recipes/pretrain/motion_stream_synthetic.yaml: no written data is read, and the caption
    target takes each streamed sample's own caption."""
    from glus.train.cli import fit

    override = tmp_path / "tiny.yaml"
    override.write_text(yaml.safe_dump({
        "trainer": {"max_steps": 2, "log_every_n_steps": 1},
        "model": {"init_args": {"warmup_steps": 1, "total_steps": 2}},
        "data": {"init_args": {"batch_size": 1, "steps_per_epoch": 2, "num_workers": 0}}}))
    recipes = [ROOT / "recipes" / "pretrain" / f"{name}.yaml" for name in ("mllm_synthetic", "motion_synthetic",
                                                                           "motion_stream_synthetic")]
    cli = fit([arg for r in recipes for arg in ("--config", str(r))] + ["--config", str(override)],
              runs_root=str(tmp_path / "runs"), wandb="disabled")
    module, data = cli.model, cli.datamodule
    assert cli.trainer.global_step == 2 and not module.captions
    batch = data.collate([data.dataset[0], data.dataset[1]])
    ids = module.loss_targets(batch, batch["texts"])
    want = [module.prompts.expression_tokens(c) for c in batch["captions"]]
    assert [row[row >= 0].tolist() for row in ids] == [list(w) for w in want]
    assert batch["captions"] != batch["texts"]
    module.hparams.expression_target = "name"  # only the colour and shape words: "the red circle moving left" -> "red circle"
    ids = module.loss_targets(batch, batch["texts"])
    want = [module.prompts.expression_tokens(" ".join(w for p in c.split(" and ") for w in p.split()[1:3]))
            for c in batch["captions"]]
    assert [row[row >= 0].tolist() for row in ids] == [list(w) for w in want]
    module.hparams.expression_target = "name_place"  # the name and where the object is, per query frame
    ids = module.loss_targets(batch, batch["texts"])
    names = [" ".join(w for p in c.split(" and ") for w in p.split()[1:3]) for c in batch["captions"]]
    want = [[module.prompts.expression_tokens(f"{n} {place(m)}") for m in masks]
            for n, masks in zip(names, batch["masks"])]
    assert ids.shape[:2] == (len(names), 4)
    assert [[row[row >= 0].tolist() for row in rows] for rows in ids] == [[list(w) for w in ws] for ws in want]
    assert name_words("a man riding a horse") == "a man riding a horse"  # no synthetic words: the text as it is
    with pytest.raises(ValueError, match="object_labels"):
        StreamedClipDataset(2, ClipSpec(object_motions=True, object_labels="colour"))


def test_first_kinds_fill_each_clip_with_that_kind_before_the_others():
    spec = ClipSpec(clip_size=112, clip_resize="squash", sam_size=128, max_expressions=3)
    plain, motion_first = StreamedClipDataset(64, spec), StreamedClipDataset(64, spec, first_kinds=("motion",))
    more = 0
    for i in range(12):
        video = make_video(0, "stream", i)
        kinds = {r.text: r.kind for r in video.referrals}
        n_motion = sum(k == "motion" for k in kinds.values())
        got = [kinds[t] for t in motion_first[i]["texts"]]
        assert got.count("motion") == min(n_motion, 3) and got[:got.count("motion")] == ["motion"] * got.count("motion")
        more += got.count("motion") - [kinds[t] for t in plain[i]["texts"]].count("motion")
    assert more > 0


def test_the_name_stage_and_the_default_start_from_the_committed_motion_stage(tmp_path):
    """recipes/pretrain/motion_name_synthetic.yaml stacks on stage 3a's recipes and trains the name target; the
    embedded default starts from the committed stage (checkpoints/synthetic/motion): every stage parameter of the
    multimodal LM, LoRA included, is the committed one before training."""
    from safetensors.torch import load_file

    from glus.model.build.tiny import TinyGLUSBuilder, stage_hint
    from glus.train.cli import fit

    stage = ROOT / "checkpoints" / "synthetic" / "motion"
    override = tmp_path / "tiny.yaml"
    override.write_text(yaml.safe_dump({
        "trainer": {"max_steps": 1, "log_every_n_steps": 1},
        "model": {"init_args": {"warmup_steps": 1, "total_steps": 1,
                                "builder": {"class_path": "glus.model.build.tiny.TinyGLUSBuilder",
                                            "init_args": {"mllm_init": str(stage)}}}},
        "data": {"init_args": {"batch_size": 1, "steps_per_epoch": 1, "num_workers": 0}}}))
    recipes = [ROOT / "recipes" / "pretrain" / f"{name}.yaml" for name in (
        "mllm_synthetic", "motion_synthetic", "motion_stream_synthetic", "motion_name_synthetic")]
    cli = fit([arg for r in recipes for arg in ("--config", str(r))] + ["--config", str(override)],
              runs_root=str(tmp_path / "runs"), wandb="disabled")
    assert cli.model.hparams.expression_target == "name" and cli.trainer.global_step == 1

    recipe = yaml.safe_load((ROOT / "recipes" / "synthetic.yaml").read_text())
    args = recipe["model"]["init_args"]["builder"]["init_args"]
    assert args["mllm_init"] == "checkpoints/synthetic/motion"
    model, _ = TinyGLUSBuilder(**{**args, "mllm_init": str(stage)}).build()
    own = dict(model.named_parameters())
    heads = {n: p for n, p in load_file(str(stage / "heads.safetensors")).items() if n.startswith("mllm.")}
    adapter = load_file(str(stage / "adapter" / "adapter_model.safetensors"))
    assert heads and adapter
    for name, p in heads.items():
        assert torch.equal(own[name], p), name
    lora = {n: p for n, p in own.items() if "lora_" in n}
    assert len(lora) == len(adapter)
    for name, p in adapter.items():  # peft saves "...q_proj.lora_A.weight" for "...q_proj.lora_A.default.weight"
        match = [q for n, q in lora.items() if n.replace(".default", "").endswith(name.split("base_model.model.")[-1])]
        assert len(match) == 1 and torch.equal(match[0], p), name
    assert stage_hint("checkpoints/synthetic/motion").startswith("make motion-stage")
    assert stage_hint("somewhere/else").startswith("a GLUS export")


def test_the_written_data_overlay_trains_the_default_on_the_written_videos(tmp_path, synth_root):
    """recipes/data/synthetic_written.yaml swaps the default's streamed scenes for the written training split;
    the default's clips (motions and their dense labels included) stay as they are."""
    from glus.train.cli import fit

    override = tmp_path / "tiny.yaml"
    override.write_text(yaml.safe_dump({
        "trainer": {"max_steps": 1, "log_every_n_steps": 1},
        "model": {"init_args": {"warmup_steps": 1, "total_steps": 1, "evaluation": None}},
        "data": {"init_args": {"root": str(synth_root), "batch_size": 1, "steps_per_epoch": 1, "num_workers": 0}}}))
    cli = fit(["--config", str(ROOT / "recipes" / "synthetic.yaml"), "--config",
               str(ROOT / "recipes" / "data" / "synthetic_written.yaml"), "--config", str(override)],
              runs_root=str(tmp_path / "runs"), wandb="disabled")
    data = cli.datamodule
    default = yaml.safe_load((ROOT / "recipes" / "synthetic.yaml").read_text())["data"]["init_args"]["clip"]
    assert type(data).__name__ == "GLUSDataModule" and cli.trainer.global_step == 1
    assert {k: getattr(data.clip, k) for k in default} == default
    sample = data.dataset[0]
    assert sample["ids"][0][0] == "mevis/train" and sample["ids"][0][1].startswith("train_")  # a written video
    assert sample["object_motions"].numel() > 0


def test_a_clip_schedule_changes_the_clips_from_its_steps_on():
    """Sample i belongs to optimiser step i // samples_per_step; from each entry's step its fields replace the
    spec's, cumulatively; a wrong entry is refused with the fix."""
    from glus.data.errors import DataError
    from glus.data.vos_clips import VOSClipSpec

    spec = VOSClipSpec(num_frames=8, max_skip=3, sam_size=128, prompts={"mask": 0.5, "clicks": 0.5},
                       schedule=[{"from_step": 10, "num_frames": 4}, {"from_step": 0, "num_frames": 2,
                                                                       "prompts": {"mask": 1.0}}])
    assert (spec.at_step(0).num_frames, spec.at_step(0).prompts, spec.at_step(0).max_skip) == (2, {"mask": 1.0}, 3)
    assert (spec.at_step(9).num_frames, spec.at_step(10).num_frames, spec.at_step(10).prompts) == (2, 4, {"mask": 1.0})
    data = StreamedVOSClipDataset(64, spec, seed=0, data_seed=0, samples_per_step=2)
    assert [len(data[i]["frames"]) for i in (0, 19, 20, 63)] == [2, 2, 4, 4]
    assert data[3]["points"] is None  # the mask only, from the schedule's first entry
    with pytest.raises(DataError, match="from_step"):
        VOSClipSpec(schedule=[{"num_frames": 2}])
    with pytest.raises(DataError, match="from_step"):
        VOSClipSpec(schedule=[{"from_step": 0, "frames": 2}])
