import pytest

from glus.data.samplers import (inference_context_frames, query_frames, rng_for, query_window,
                                train_context_frames)


def test_train_context_one_frame_per_equal_segment():
    for i in range(50):
        frames = train_context_frames(20, 4, rng_for(0, i))
        assert [f // 5 for f in frames] == [0, 1, 2, 3]  # one from each of [0,5) [5,10) [10,15) [15,20)


def test_samplers_are_deterministic_in_seed_and_index():
    a = [train_context_frames(37, 4, rng_for(7, i)) + query_frames(37, 4, rng_for(7, i, 1)) for i in range(20)]
    b = [train_context_frames(37, 4, rng_for(7, i)) + query_frames(37, 4, rng_for(7, i, 1)) for i in range(20)]
    assert a == b
    assert a != [train_context_frames(37, 4, rng_for(8, i)) + query_frames(37, 4, rng_for(8, i, 1))
                 for i in range(20)]


def test_query_frames_are_consecutive_and_inside():
    starts = set()
    for i in range(200):
        q = query_frames(10, 4, rng_for(0, i))
        assert q == list(range(q[0], q[0] + 4)) and q[-1] <= 9
        starts.add(q[0])
    assert starts == set(range(7))  # every start 0..6 occurs


def test_short_videos():
    assert query_frames(2, 4, rng_for(0, 0)) == [0, 1, 1, 1]
    assert query_frames(4, 4, rng_for(0, 0)) == [0, 1, 2, 3]
    assert sorted(train_context_frames(2, 4, rng_for(0, 0))) == train_context_frames(2, 4, rng_for(0, 0))
    assert all(0 <= f < 2 for f in train_context_frames(2, 4, rng_for(0, 3)))
    assert inference_context_frames(1, 4) == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        query_frames(0, 4, rng_for(0, 0))


def test_inference_context_is_the_segment_centre():
    assert inference_context_frames(20, 4) == [2, 7, 12, 17]
    assert inference_context_frames(8, 4) == [1, 3, 5, 7]


def test_inference_context_frames_are_the_published_ones():
    """inference_iter.py: bounds = linspace(0, T, 5, dtype=int), frame_clips[i][j] = min(bounds[j] + i,
    bounds[j+1] - 1), and the loop uses i = len(frame_clips) // 2 with len(frame_clips) = ceil(T / 4)."""
    import math

    import numpy as np

    for T in range(4, 300):
        bounds = np.linspace(0, T, 5, dtype=int)
        i = math.ceil(T / 4) // 2
        assert inference_context_frames(T, 4) == [min(bounds[j] + i, bounds[j + 1] - 1) for j in range(4)], T
    assert inference_context_frames(30, 4) == [4, 11, 19, 26]  # not round((j + 0.5) * T / 4): [3, 11, 18, 26]


def test_query_window_grows_then_slides():
    order = list(range(6))
    assert [query_window(order, i, 4) for i in range(6)] == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4],
                                                             [2, 3, 4, 5]]
    assert query_window([5, 4, 3], 2, 2) == [4, 3]  # a backward pass
    with pytest.raises(ValueError):
        query_window(order, 0, 0)
