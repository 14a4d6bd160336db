"""J, F, A, R against hand-computed cases and a naive per-pixel re-implementation of the DAVIS code."""
import math

import numpy as np
import pytest

from glus.eval.metrics import (ExpressionScore, a_per_frame, aggregate_mean, aggregate_revos, f_per_frame,
                               j_per_frame, r_per_frame, score_expression)


def pixel(y, x, h=10, w=10):
    m = np.zeros((h, w), np.uint8)
    m[y, x] = 1
    return m


# ---- hand-computed cases (10 x 10: tolerance ceil(0.008 * 14.1) = 1 pixel, a plus-shaped disk) -------------

def test_empty_vs_empty_is_perfect():
    z = np.zeros((10, 10), np.uint8)
    assert j_per_frame(z, z).tolist() == [1.0] and f_per_frame(z, z).tolist() == [1.0]


def test_empty_vs_nonempty_is_zero_both_ways():
    z, p = np.zeros((10, 10), np.uint8), pixel(4, 4)
    for a, b in ((z, p), (p, z)):
        assert j_per_frame(a, b).tolist() == [0.0] and f_per_frame(a, b).tolist() == [0.0]


def test_one_pixel_masks():
    assert (j_per_frame(pixel(2, 2), pixel(2, 2))[0], f_per_frame(pixel(2, 2), pixel(2, 2))[0]) == (1.0, 1.0)
    # one pixel apart: no overlap, but each 4-pixel boundary lies within the 1-pixel tolerance of the other
    assert (j_per_frame(pixel(2, 3), pixel(2, 2))[0], f_per_frame(pixel(2, 3), pixel(2, 2))[0]) == (0.0, 1.0)
    # two apart: half of each boundary is matched -> P = R = 0.5
    assert f_per_frame(pixel(2, 4), pixel(2, 2))[0] == pytest.approx(0.5)
    # far apart: nothing matched
    assert f_per_frame(pixel(2, 6), pixel(2, 2))[0] == 0.0


def test_masks_touching_the_border():
    gt = np.zeros((10, 10), np.uint8)
    gt[:, 0] = 1
    shifted = np.zeros_like(gt)
    shifted[:, 1] = 1
    assert j_per_frame(shifted, gt)[0] == 0.0 and f_per_frame(shifted, gt)[0] == 1.0
    # DAVIS' boundary map ignores the image border: a full-frame mask has no boundary at all, so its F
    # against an empty mask is 1 (a known quirk of the official code, kept for exact agreement); J is 0.
    full = np.ones_like(gt)
    assert f_per_frame(full, np.zeros_like(gt))[0] == 1.0 and j_per_frame(full, np.zeros_like(gt))[0] == 0.0


def test_partial_overlap_iou():
    gt = np.zeros((10, 10), np.uint8)
    gt[0:4, 0:4] = 1  # 16 pixels
    pred = np.zeros_like(gt)
    pred[2:6, 0:4] = 255  # 0/255 PNG convention: any non-zero value is foreground
    assert j_per_frame(pred, gt)[0] == pytest.approx(8 / 24)


def test_sizes_must_match():
    with pytest.raises(ValueError, match="differs from ground-truth shape.*never resized"):
        j_per_frame(np.zeros((10, 10)), np.zeros((10, 11)))
    with pytest.raises(ValueError, match="differs"):
        f_per_frame(np.zeros((2, 10, 10)), np.zeros((3, 10, 10)))


def test_accuracy_and_robustness_on_binary_masks():
    gt = np.zeros((10, 10), np.uint8)
    gt[0:2, 0:2] = 1
    pred = gt * 255
    pred[5, 5] = pred[6, 6] = 255  # two false positives
    fg = np.zeros_like(gt)
    fg[:5, :] = 1  # 50 foreground pixels
    assert a_per_frame(pred, gt)[0] == pytest.approx(0.98)
    assert r_per_frame(pred, gt, fg)[0] == pytest.approx(1 - 2 / (50 + 1e-6))
    many = np.ones_like(gt) * 255
    assert r_per_frame(many, gt, fg)[0] == 0.0  # clipped at 0


# ---- a naive reference: the DAVIS-2017 code's steps, one pixel at a time ---------------------------------

def naive_bmap(seg):
    h, w = seg.shape
    b = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            e = seg[y, x + 1] if x + 1 < w else 0
            s = seg[y + 1, x] if y + 1 < h else 0
            se = seg[y + 1, x + 1] if (x + 1 < w and y + 1 < h) else 0
            if y == h - 1 and x == w - 1:
                b[y, x] = False
            elif y == h - 1:
                b[y, x] = seg[y, x] != e
            elif x == w - 1:
                b[y, x] = seg[y, x] != s
            else:
                b[y, x] = (seg[y, x] != e) or (seg[y, x] != s) or (seg[y, x] != se)
    return b


def naive_dilate(b, r):
    h, w = b.shape
    out = np.zeros_like(b)
    for y, x in zip(*np.nonzero(b)):
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if dy * dy + dx * dx <= r * r and 0 <= y + dy < h and 0 <= x + dx < w:
                    out[y + dy, x + dx] = True
    return out


def naive_f(pred, gt):
    r = math.ceil(0.008 * math.hypot(*pred.shape))
    pb, gb = naive_bmap(pred > 0), naive_bmap(gt > 0)
    n_p, n_g = pb.sum(), gb.sum()
    if n_p == 0 and n_g > 0:
        p, rec = 1, 0
    elif n_p > 0 and n_g == 0:
        p, rec = 0, 1
    elif n_p == 0 and n_g == 0:
        p, rec = 1, 1
    else:
        p = (pb & naive_dilate(gb, r)).sum() / n_p
        rec = (gb & naive_dilate(pb, r)).sum() / n_g
    return 0.0 if p + rec == 0 else 2 * p * rec / (p + rec)


def random_blobs(rng, t, h, w):
    masks = np.zeros((t, h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for i in range(t):
        for _ in range(rng.integers(0, 3)):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 12)
            masks[i] |= ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)
    return masks


def test_vectorised_f_and_j_equal_the_naive_reference():
    rng = np.random.default_rng(0)
    pred, gt = random_blobs(rng, 12, 70, 150), random_blobs(rng, 12, 70, 150)  # tolerance: 2 pixels
    pred[3] = gt[3]
    pred[4] = 0
    gt[4] = 0
    f = f_per_frame(pred, gt)
    np.testing.assert_allclose(f, [naive_f(p, g) for p, g in zip(pred, gt)], rtol=0, atol=1e-12)
    naive_j = [1.0 if not (p | g).any() else (p & g).sum() / (p | g).sum() for p, g in zip(pred, gt)]
    np.testing.assert_allclose(j_per_frame(pred, gt), naive_j, rtol=0, atol=1e-12)
    assert 0 < f.mean() < 1  # the random case is not degenerate


# ---- aggregations -------------------------------------------------------------------------------------

def test_mevis_aggregation_is_the_mean_of_per_expression_means():
    gt = np.zeros((2, 10, 10), np.uint8)
    gt[:, 0:4, 0:4] = 1
    pred = gt.copy()
    pred[1] = 0  # frame 2 missed: J = (1 + 0) / 2
    s1 = score_expression("v", "0", pred, gt)
    s2 = score_expression("v", "1", gt, gt)
    assert (s1.j, s1.f, s1.frames) == (0.5, 0.5, 2)
    out = aggregate_mean([s1, s2])
    assert out == {"j": 0.75, "f": 0.75, "jf": 0.75, "count": 2}


def test_revos_rounds_per_expression_and_averages_types():
    scores = [ExpressionScore("v", "0", j=0.123456, f=0.2, a=0.9, r=1.0, type_id=0),
              ExpressionScore("v", "1", j=0.5, f=0.3, a=0.8, r=1.0, type_id=0),
              ExpressionScore("v", "2", j=0.4, f=0.6, a=0.7, r=0.5, type_id=1),
              ExpressionScore("v", "3", j=0.0, f=0.0, a=0.0, r=0.0, type_id=2)]  # excluded
    out = aggregate_revos(scores)
    assert out["referring"]["j"] == pytest.approx((12.35 + 50.0) / 2 / 100)  # 12.3456 rounds to 12.35
    assert out["reasoning"]["jf"] == pytest.approx(0.5)
    assert out["j"] == pytest.approx(((12.35 + 50.0) / 2 / 100 + 0.4) / 2)
    assert out["r"] == pytest.approx((1.0 + 0.5) / 2)
    assert out["count"] == 3
    with pytest.raises(ValueError, match="no reasoning expression"):
        aggregate_revos(scores[:2])
