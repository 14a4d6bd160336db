"""The synthetic dataset: deterministic, valid in both layouts, and with every property GLUS needs."""
import hashlib
import json
from collections import Counter

import numpy as np

from glus.cli import main
from glus.data.cache import load_split
from glus.data.masks import MaskReader
from glus.data.synth import write_synthetic
from glus.data.synth.video import make_video


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_by_seed(tmp_path):
    write_synthetic(tmp_path / "a", seed=3, videos=4, progress=False)
    write_synthetic(tmp_path / "b", seed=3, videos=4, progress=False)
    write_synthetic(tmp_path / "c", seed=4, videos=4, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_both_layouts_pass_the_checker(synth_root, capsys):
    assert main(["data", "check", str(synth_root / "mevis"), "--format", "mevis"]) == 0
    assert main(["data", "check", str(synth_root / "refytvos"), "--format", "refytvos"]) == 0
    out = capsys.readouterr().out
    assert "mevis/valid_u" in out and "refytvos/valid" in out and "ok: no problems" in out


def test_refytvos_valid_subtracts_the_test_videos(synth_root):
    valid = load_split(synth_root, "refytvos/valid")
    mevis_valid_u = load_split(synth_root, "mevis/valid_u")
    assert set(valid.videos) == set(mevis_valid_u.videos)  # the two extra "test" videos are gone
    meta = json.loads((synth_root / "refytvos/meta_expressions/valid/meta_expressions.json").read_text())
    assert len(meta["videos"]) == len(valid.videos) + 2


def test_every_capability_is_exercised():
    videos = [make_video(0, "train", i) for i in range(32)]
    motions = Counter(o.motion for v in videos for o in v.scene.objects)
    assert {"left", "right", "up", "down", "still", "speeding", "stopping", "entering", "leaving"} <= set(motions)
    lookalikes = [v for v in videos if len({(o.colour, o.shape) for o in v.scene.objects}) < len(v.scene.objects)]
    assert len(lookalikes) >= 8
    for v in lookalikes:  # look-alikes are told apart by motion alone
        pair = Counter((o.colour, o.shape) for o in v.scene.objects).most_common(1)[0][0]
        kinds = [o.motion for o in v.scene.objects if (o.colour, o.shape) == pair]
        assert len(set(kinds)) == len(kinds)
    per_object = Counter((v.vid, tuple(r.obj_ids)) for v in videos for r in v.referrals)
    assert sum(n >= 2 for k, n in per_object.items() if len(k[1]) == 1) >= 50  # positives for contrastive loss
    assert any(len(r.obj_ids) > 1 for v in videos for r in v.referrals)  # expressions for several objects
    texts = Counter((v.vid, r.text) for v in videos for r in v.referrals)
    assert max(texts.values()) == 1  # no text refers to two different targets in one video


def test_motion_phrases_fit_their_objects_alone():
    """A travelling object (speeding, stopping, entering, leaving) also "moves left" or "right": no expression may
    name a motion that another candidate object shows too, and "the objects moving left" names all of them."""
    from glus.data.synth.language import fitting_motions
    from glus.vocabulary import MOTION_PHRASES, PLURAL_MOTION

    phrase_motion = {p: m for m, ps in MOTION_PHRASES.items() for p in ps}
    checked = plural = 0
    for v in [make_video(0, "train", i) for i in range(48)]:
        fits = {o.obj_id: fitting_motions(o) for o in v.scene.objects}
        for r in v.referrals:
            if r.kind in ("motion", "look-alike"):
                motion = next(m for p, m in phrase_motion.items() if r.text.endswith(p))
                target = v.scene.objects[r.obj_ids[0]]
                rivals = [o for o in v.scene.objects if o is not target and (
                    r.kind == "motion" or (o.colour, o.shape) == (target.colour, target.shape))]
                assert motion in fits[target.obj_id] and not any(motion in fits[o.obj_id] for o in rivals), r.text
                checked += 1
            elif r.text.startswith("the objects "):
                motion = next(m for m, p in PLURAL_MOTION.items() if r.text == f"the objects {p}")
                assert sorted(r.obj_ids) == sorted(i for i, f in fits.items() if motion in f), r.text
                plural += 1
    assert checked >= 100 and plural >= 3
    # by hand: a leaving object that goes right also "moves right"; a plain left-mover fits only "left"
    from glus.data.synth.scene import SceneObject

    right = np.array([[60.0, 50.0], [120.0, 50.0], [175.0, 50.0]])
    assert fitting_motions(SceneObject(0, "red", "circle", "leaving", 10, right, z=0)) == {"leaving", "right"}
    assert fitting_motions(SceneObject(1, "red", "circle", "speeding", 10, right[::-1], z=1)) == {"speeding", "left"}
    assert fitting_motions(SceneObject(2, "red", "circle", "left", 10, right[::-1], z=2)) == {"left"}


def test_absent_and_occluded_objects(synth_root):
    index = load_split(synth_root, "mevis/train")
    reader = MaskReader(index)
    masks = json.loads((synth_root / "mevis/train/mask_dict.json").read_text())
    assert any(m is None for per_frame in masks.values() for m in per_frame)  # entering / leaving: null RLE
    videos = [make_video(0, "train", i) for i in range(8)]
    occluded = 0
    for v in videos:
        bars = [o for o in v.scene.objects if o.shape == "bar"]
        for o in v.scene.objects:
            if bars and o.shape != "bar":
                visible = [(lab == o.obj_id + 1).sum() for lab in v.labels]
                occluded += min(visible) < max(visible) * 0.7 and o.motion in ("left", "right", "speeding")
    assert occluded >= 1
    expr = index.expressions[0]
    assert reader.targets(expr, range(3)).shape == (3, 120, 160)


def test_no_target_expressions_on_request(tmp_path):
    write_synthetic(tmp_path, seed=0, videos=4, no_target_rate=1.0, progress=False)
    index = load_split(tmp_path, "mevis/train")
    assert index.summary()["no_target"] == 4
    empty = next(e for e in index.expressions if not e.has_target)
    assert not np.any(MaskReader(index).target(empty, 0))


def test_expression_kinds_say_what_tells_the_object_apart(synth_root):
    videos = [make_video(0, "train", i, no_target_rate=0.3) for i in range(32)]
    seen = Counter()
    for v in videos:
        looks = Counter((o.colour, o.shape) for o in v.scene.objects)
        for r in v.referrals:
            if not r.obj_ids:
                expected = "absent"
            elif len(r.obj_ids) > 1:
                expected = "plural"
            elif r.text.startswith("the object "):
                expected = "motion"
            else:
                o = v.scene.objects[r.obj_ids[0]]
                expected = "look-alike" if looks[(o.colour, o.shape)] > 1 else "appearance"
            assert r.kind == expected, (v.vid, r.text)
            seen[r.kind] += 1
    assert set(seen) == {"appearance", "look-alike", "motion", "plural", "absent"}
    index = load_split(synth_root, "mevis/valid_u")
    assert set(index.kinds()) == {(e.video, e.exp_id) for e in index.expressions}  # every expression, nothing more
    assert set(index.captions()) == set(index.kinds())


def test_long_videos_cross_twins_and_bring_wanderers_back(tmp_path):
    """`glus data synth --frames T`: in every long video the twins' left-right order swaps again and again (read
    from their centres), and each wanderer is seen, lost and seen again (read from the drawn label maps); the
    written masks are the label maps' objects, empty where an object is out of the frame."""
    from glus.data.synth.long import LONG_KIND, make_long_video

    assert main(["data", "synth", "--out", str(tmp_path), "--videos", "3", "--frames", "300"]) == 0
    index = load_split(str(tmp_path), "mevis/valid_u")
    reader = MaskReader(index)
    for i in range(3):
        video = make_long_video(0, i, 300)
        objs = video.scene.objects
        twins = [o for o in objs if (o.colour, o.shape) == (objs[0].colour, objs[0].shape)]
        order = np.sign(twins[0].centres[:, 0] - twins[1].centres[:, 0])
        assert len(twins) == 2 and np.count_nonzero(np.diff(order[order != 0])) >= 2
        for o in (o for o in objs if o.motion == "wandering"):
            seen = "".join("1" if (label == o.obj_id + 1).any() else "0" for label in video.labels)
            assert "10" in seen and "01" in seen[seen.index("10"):], seen  # seen, lost, seen again
        exprs = index.by_video()[video.vid]
        assert [e.text for e in exprs] == [r.text for r in video.referrals] and len(exprs) == len(objs)
        for e, o in zip(exprs, objs):
            got = reader.targets(e, range(300))
            assert np.array_equal(got, np.stack([label == o.obj_id + 1 for label in video.labels]))
        assert set(index.kinds().values()) == {LONG_KIND}
