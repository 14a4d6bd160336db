"""Temporal kinds (event, crossing, order): every expression fits exactly the objects it names, read back from the
scene's trajectories by naive readers written here (not the generator's own), and outside the referred moment the
twins cannot be told apart; the writer adds them without changing the other videos; the stream mixes them in."""
import json
from collections import Counter

import numpy as np
import pytest

from glus.data.cache import load_split
from glus.data.synth import write_synthetic
from glus.data.synth.temporal import (CROSSING, EVENT, EVENTS, ORDER, ORDERS, SIDES, TEMPORAL_KINDS,
                                      make_temporal_video)
from glus.data.synth.video import HEIGHT, WIDTH

N = 45  # videos per kind: every event, side and order action comes up several times


def videos(kind):
    return [make_temporal_video(3, "train", i, kind) for i in range(N)]


def phrase_key(text: str, table: dict) -> str:
    keys = [k for k, phrases in table.items() if any(text.endswith(p) for p in phrases)]
    assert len(keys) == 1, text
    return keys[0]


def twins(video, o):
    return [x for x in video.scene.objects if (x.colour, x.shape) == (o.colour, o.shape)]


def odd_steps(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of steps unlike the first one, the first step): a naive reading of an event."""
    steps = np.diff(centres, axis=0)
    return np.flatnonzero(np.abs(steps - steps[0]).max(1) > 1e-6), steps[0]


@pytest.mark.parametrize("video", videos(EVENT), ids=lambda v: v.vid)
def test_an_event_expression_names_the_one_twin_that_makes_that_event(video):
    (ref,) = video.referrals
    assert ref.kind == EVENT and len(ref.obj_ids) == 1
    o = video.scene.objects[ref.obj_ids[0]]
    pair = twins(video, o)
    assert len(pair) == 2 and ref.text.startswith(f"the {o.colour} {o.shape} ")
    other = next(x for x in pair if x is not o)
    assert len(odd_steps(other.centres)[0]) == 0  # the other twin moves at one velocity throughout
    odd, usual = odd_steps(o.centres)
    event = phrase_key(ref.text, EVENTS)
    if event == "jump":  # the run of frames off its row (a half sine: the steps at its top are level)
        assert np.allclose(np.diff(o.centres[:, 0]), usual[0])
        odd = np.flatnonzero(np.abs(o.centres[:, 1] - o.centres[0, 1]) > 1e-6)
        assert np.abs(o.centres[:, 1] - o.centres[0, 1]).max() > o.radius  # a jump one can see
    T = video.scene.num_frames
    assert len(odd) >= T // 5 - 1 and np.array_equal(odd, np.arange(odd[0], odd[-1] + 1))  # one run
    assert 0 < odd[0] and odd[-1] < T - 2  # it starts and ends inside the video: before and after, alike
    assert np.allclose(usual, np.diff(other.centres, axis=0)[0])  # same speed and direction as its twin
    step = np.diff(o.centres, axis=0)[odd]
    if event != "jump":
        factor = {"pause": 0.0, "turn": -1.0, "dash": 2.5}[event]
        assert np.allclose(step[:, 0], factor * usual[0]) and np.allclose(step[:, 1], 0)
    for x in pair:  # the twins stay wholly inside the frame: no absence tells them apart
        assert (x.centres[:, 0] >= x.radius).all() and (x.centres[:, 0] <= WIDTH - x.radius).all()
        assert (x.centres[:, 1] >= x.radius).all() and (x.centres[:, 1] <= HEIGHT - x.radius).all()


def test_where_an_event_twin_is_says_little_of_which_one_it_is():
    # its event moves it back or ahead: its start is drawn so that, over the frames, it is ahead about half the time
    ahead = []
    for v in [make_temporal_video(4, "train", i, EVENT) for i in range(120)]:
        o = v.scene.objects[v.referrals[0].obj_ids[0]]
        other = next(x for x in twins(v, o) if x is not o)
        direction = np.sign(o.centres[-1, 0] - o.centres[0, 0]) or 1.0
        ahead.append(((o.centres[:, 0] - other.centres[:, 0]) * direction > 0).mean())
    assert 0.35 < np.mean(ahead) < 0.65


@pytest.mark.parametrize("video", videos(CROSSING), ids=lambda v: v.vid)
def test_a_crossing_expression_names_the_twin_from_that_side(video):
    (ref,) = video.referrals
    o = video.scene.objects[ref.obj_ids[0]]
    pair = twins(video, o)
    assert ref.kind == CROSSING and len(pair) == 2 and ref.text.startswith(f"the {o.colour} {o.shape} ")
    side = phrase_key(ref.text, SIDES)
    starts = {("left" if x.centres[0, 0] < WIDTH / 2 else "right"): x for x in pair}
    assert set(starts) == {"left", "right"} and starts[side] is o
    gap = np.linalg.norm(pair[0].centres - pair[1].centres, axis=1)
    met = int(np.argmin(gap))
    assert gap[met] < 1.0  # they meet: one spot, one look
    # from a little after the meeting, both move alike, so no later window tells which came from where
    steps = [np.diff(x.centres, axis=0) for x in pair]
    late = slice(met + 8, None)
    assert np.allclose(steps[0][late], steps[1][late]) and len(steps[0][late]) >= 8
    assert gap[met + 8:].min() > 2 * o.radius  # parted: two separate masks


def test_which_row_the_crossing_twin_leaves_on_is_a_coin():
    on_top = [v.scene.objects[v.referrals[0].obj_ids[0]].centres[-1, 1] <
              [x for x in v.scene.objects if x.obj_id != v.referrals[0].obj_ids[0]][0].centres[-1, 1]
              for v in (make_temporal_video(5, "train", i, CROSSING) for i in range(120))]
    assert 0.35 < np.mean(on_top) < 0.65


def naive_time(o, action: str) -> int:
    moved = [t for t in range(1, len(o.centres)) if np.abs(o.centres[t] - o.centres[t - 1]).max() > 1e-6]
    if action == "stop":
        return moved[-1]
    if action == "start":
        return moved[0] - 1
    gone = [t for t in range(len(o.centres)) if not o.present(t, WIDTH, HEIGHT)]
    assert gone and gone[-1] == len(o.centres) - 1 and gone == list(range(gone[0], gone[-1] + 1))
    return gone[0]


@pytest.mark.parametrize("video", videos(ORDER), ids=lambda v: v.vid)
def test_an_order_expression_names_the_first_or_last_to_act(video):
    (ref,) = video.referrals
    action = phrase_key(ref.text, {a: [p for ps in d.values() for p in ps] for a, d in ORDERS.items()})
    which = "first" if ref.text in ORDERS[action]["first"] else "last"
    objs = video.scene.objects
    assert len({(o.colour, o.shape) for o in objs}) == len(objs) == 3  # no look-alike: only the order tells
    times = [naive_time(o, action) for o in objs]
    assert len(set(times)) == 3 and min(np.diff(sorted(times))) >= video.scene.num_frames // 8
    assert ref.obj_ids == [int(np.argmin(times) if which == "first" else np.argmax(times))]
    if action == "leave":  # one speed for all: the order of leaving is the order of setting off
        speeds = {round(float(np.abs(np.diff(o.centres[:, 0])).max()), 6) for o in objs}
        assert len(speeds) == 1


def test_every_event_side_and_action_comes_up():
    seen = Counter()
    for kind, table in ((EVENT, EVENTS), (CROSSING, SIDES)):
        seen.update(phrase_key(v.referrals[0].text, table) for v in videos(kind))
    seen.update(next(a for a, d in ORDERS.items() if any(v.referrals[0].text in ps for ps in d.values()))
                for v in videos(ORDER))
    assert set(seen) == {*EVENTS, *SIDES, *ORDERS} and min(seen.values()) >= 3


def test_the_writer_adds_temporal_videos_and_leaves_the_others_as_they_were(tmp_path):
    write_synthetic(tmp_path / "plain", seed=2, videos=6, progress=False, valid_per_kind=3)
    write_synthetic(tmp_path / "temporal", seed=2, videos=6, progress=False, valid_per_kind=3, temporal_per_kind=4,
                    temporal_videos=5)
    for split in ("train", "valid_u"):
        plain = json.loads((tmp_path / "plain/mevis" / split / "meta_expressions.json").read_text())["videos"]
        more = json.loads((tmp_path / "temporal/mevis" / split / "meta_expressions.json").read_text())["videos"]
        assert {k: more[k] for k in plain} == plain  # the same videos and expressions, in the same order
        added = [v for v in more if v not in plain]
        assert len(added) == (5 if split == "train" else 12)
        for vid in plain:  # frames identical too
            a = (tmp_path / "plain/mevis" / split / "JPEGImages" / vid / "00000.jpg").read_bytes()
            assert a == (tmp_path / "temporal/mevis" / split / "JPEGImages" / vid / "00000.jpg").read_bytes()
    kinds = Counter(load_split(tmp_path / "temporal", "mevis/valid_u").kinds().values())
    assert all(kinds[k] == 4 for k in TEMPORAL_KINDS) and all(kinds[k] == 3 for k in ("appearance", "plural"))
    index = load_split(tmp_path / "temporal", "mevis/valid_u")
    lengths = [len(index.videos[e.video].frames) for e in index.expressions if e.kind in TEMPORAL_KINDS]
    assert min(lengths) >= 40 and max(lengths) <= 64


def test_the_stream_mixes_temporal_scenes_at_its_rate():
    from glus.data.clips import ClipSpec
    from glus.data.synth.stream import StreamedClipDataset

    spec = ClipSpec(clip_size=112, sam_size=128, num_context=4, num_query=4, max_expressions=2)
    plain = StreamedClipDataset(60, spec, seed=0)
    mixed = StreamedClipDataset(60, spec, seed=0, temporal_rate=0.5)
    temporal = [i for i in range(60) if "_event_" in mixed._video(i).vid or "_crossing_" in mixed._video(i).vid
                or "_order_" in mixed._video(i).vid]
    assert 18 <= len(temporal) <= 42
    assert all(plain._video(i).vid == mixed._video(i).vid for i in range(60) if i not in temporal)
    item = mixed[temporal[0]]
    assert item["texts"] == [r.text for r in mixed._video(temporal[0]).referrals]  # one expression per scene
