"""glus study motion-probe's data and model (no long training: its figures belong in the README, not in tests)."""
import numpy as np
import pytest
import torch

from glus.data.synth.language import TRAVELLING
from glus.studies.motion_probe import (DELIMITER, MOTION, OBJECT, SEG, ProbeConfig, MotionProbe, chance_accuracy,
                                    collate, draw_sample, run_probe)
from glus.data.synth.scene import MOTIONS


def test_a_sample_names_the_one_object_its_motion_fits():
    for i in range(30):
        rows, target, visible = draw_sample(np.random.default_rng(i))
        kinds = rows[:, 0].astype(int).tolist()
        assert kinds[-2:] == [MOTION, SEG] and kinds.count(DELIMITER) == 8
        objects = rows[rows[:, 0] == OBJECT]
        classes = set((objects[:, 1] * 3 + objects[:, 2]).astype(int).tolist())
        assert classes == visible and target in visible
        motion = MOTIONS[int(rows[-2, 6])]
        # the object rows carry their own motion (the aux target): the target's is the word, or the word is the
        # direction of a travelling target ("the object moving left" fits a speeding object going left)
        own = {MOTIONS[int(m)] for c, s, m in objects[:, [1, 2, 6]] if int(c) * 3 + int(s) == target}
        assert motion in own or (motion in ("left", "right") and own & set(TRAVELLING))
    simple = [draw_sample(np.random.default_rng(i), simple=True) for i in range(10)]
    assert all(MOTIONS[int(m)] in MOTIONS[:5] for rows, _, _ in simple for m in rows[rows[:, 0] == OBJECT][:, 6])


def test_chance_is_one_over_the_visible_classes():
    samples = [(None, 3, {3, 4}), (None, 5, {5}), (None, 1, {2, 6, 7})]
    assert chance_accuracy(samples) == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_left_padding_does_not_change_a_prediction():
    """The [SEG] reads the same logits alone as beside a longer sequence: padding is masked, not attended."""
    torch.manual_seed(0)
    model = MotionProbe(ProbeConfig(frame_embedding=True, aux=True)).eval()
    samples = [draw_sample(np.random.default_rng(i)) for i in range(8)]
    short, long = min(samples, key=lambda s: len(s[0])), max(samples, key=lambda s: len(s[0]))
    assert len(short[0]) < len(long[0])  # 8 scenes of 2-4 objects over 8 frames never all have one length
    alone = model(*collate([short])[:2])[0]
    padded = model(*collate([short, long])[:2])[0][:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_a_short_run_writes_its_curve(tmp_path):
    cfg = ProbeConfig(steps=6, eval_every=3, eval_samples=20, batch=4, aux=True)
    report = run_probe(cfg, tmp_path / "probe.json", progress=False)
    assert [p["step"] for p in report["curve"]] == [3, 6]
    assert all(np.isfinite(p["loss"]) and 0.0 <= p["accuracy"] <= 1.0 for p in report["curve"])
    assert 0.0 < report["chance"] < 1.0 and (tmp_path / "probe.json").is_file()
