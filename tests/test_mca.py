"""MAVOS' MCA memory: focal modulation against a naive loop, the documented dynamic-frame schedule, constant
size, and the memory contract of tests/test_memory.py (checks copied here, parametrized for this memory)."""
import pytest
import torch
import torch.nn.functional as F

from glus.model.memory.mca import FocalModulation, MCAMemory
from tests.test_memory import Case as MemoryCase

SPEC = {"class_path": "glus.model.memory.mca.MCAMemory", "init_args": {"key_dim": 8, "value_dim": 16}}
VARIANTS = {"e2e": {}, "detached": {"end_to_end": False}, "no_short_term": {"short_term": False},
            "two_heads": {"heads": 2}}


class Case(MemoryCase):
    """The contract suite's case (tests/test_memory.py) for MCAMemory with these init_args."""

    def __init__(self, seed: int = 0, **init_args):
        super().__init__({**SPEC, "init_args": {**SPEC["init_args"], **init_args}}, seed=seed)


@pytest.fixture(params=sorted(VARIANTS))
def case(request):
    return Case(**VARIANTS[request.param])


# ---- focal modulation against a naive loop ---------------------------------------------------------------

def naive_focal_modulation(fm: FocalModulation, x_BDHW: torch.Tensor) -> torch.Tensor:
    """Per pixel linear maps, depthwise convolutions as explicit sums over kernel offsets."""
    B, D, H, W = x_BDHW.shape
    L = len(fm.levels)
    proj = torch.einsum("bchw,oc->bohw", x_BDHW, fm.proj_in.weight) + fm.proj_in.bias.view(1, -1, 1, 1)
    z, gates = proj[:, :D], proj[:, D:]
    out = torch.zeros_like(z)
    for level in range(L):
        weight = fm.levels[level][0].weight  # (D, 1, k, k)
        k = weight.shape[-1]
        padded = F.pad(z, (k // 2,) * 4)
        conv = torch.zeros_like(z)
        for i in range(k):
            for j in range(k):
                conv += padded[:, :, i:i + H, j:j + W] * weight[:, 0, i, j].view(1, D, 1, 1)
        z = F.gelu(conv)
        out += gates[:, level:level + 1] * z
    out += gates[:, L:L + 1] * F.gelu(z.mean(dim=(2, 3), keepdim=True))
    w = fm.proj_out.weight[:, :, 0, 0]
    return torch.einsum("bchw,oc->bohw", out, w) + fm.proj_out.bias.view(1, -1, 1, 1)


def test_focal_modulation_equals_a_naive_loop_over_levels():
    torch.manual_seed(0)
    fm = FocalModulation(6)
    with torch.no_grad():
        for p in fm.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    x = torch.randn(2, 6, 7, 5)
    torch.testing.assert_close(fm(x), naive_focal_modulation(fm, x))


# ---- the dynamic-frame schedule ----------------------------------------------------------------------------

@pytest.mark.parametrize("training,delta", [(False, 10), (True, 2)])
@torch.no_grad()
def test_dynamic_frame_is_replaced_exactly_at_the_documented_steps(training, delta):
    case = Case()
    n = 25
    feats, pos, masks = case.inputs(n)
    mem = case.memory
    state = mem.reset(training, n)
    assert state.delta == delta
    reference = None
    for s in range(n):
        mem.read(state, s, feats[s], pos)
        before = state.dynamic
        mem.write(state, s, feats[s], masks[s])
        frame = mem._encode(state, feats[s], masks[s])
        if s == 0:
            reference = state.reference
            assert state.dynamic is None
            for a, b in zip(reference, frame):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        elif s == 1:  # the first frame after the reference becomes the dynamic frame as it is
            for a, b in zip(state.dynamic, frame):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        elif s % delta == 0:
            for a, b in zip(state.dynamic, mem._merge(frame, before)):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        else:
            assert state.dynamic is before
        assert state.reference is reference and state.reference_step == 0
        expected = 1 if s < delta else (s // delta) * delta
        assert state.dynamic_step == (None if s == 0 else expected), s
        assert state.short_step == s
        for a, b in zip(state.short, frame):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@torch.no_grad()
def test_a_later_conditioning_frame_replaces_a_predicted_reference():
    case = Case()
    feats, pos, masks = case.inputs(4)
    mem = case.memory
    state = mem.reset(False, 4)
    mem.write(state, 0, feats[0], masks[0])
    mem.write(state, 1, feats[1], masks[1], is_cond=True)
    assert state.reference_step == 1 and state.dynamic is None
    mem.write(state, 2, feats[2], masks[2], is_cond=True)  # the first given mask stays the reference
    assert state.reference_step == 1 and state.dynamic_step == 2


@pytest.mark.parametrize("short_term,n", [(True, 200), (False, 40)])
@torch.no_grad()
def test_size_is_constant_over_a_long_video(short_term, n):
    case = Case(short_term=short_term)
    feats, pos, masks = case.inputs(4)
    state = case.memory.reset(False, n)
    sizes = []
    for t in range(n):
        case.memory.read(state, t, feats[t % 4], pos)
        case.memory.write(state, t, feats[t % 4], masks[t % 4])
        sizes.append(case.memory.size(state))
    full = 3 if short_term else 2
    assert sizes[0] == 1 and set(sizes[2:]) == {full} and full == case.memory.num_memories


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="multiples of heads"):
        MCAMemory(key_dim=8, value_dim=16, heads=3)
    with pytest.raises(ValueError, match="delta_train"):
        MCAMemory(delta_train=0)
    with pytest.raises(RuntimeError, match="not bound"):
        MCAMemory().read(MCAMemory().reset(False), 0, torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2))


def test_trainable_parts_follow_end_to_end():
    for e2e in (True, False):
        mem = Case(end_to_end=e2e).memory
        frozen = {n.split(".")[0] for n, p in mem.named_parameters() if not p.requires_grad}
        assert frozen == (set() if e2e else {"values", "mca"})
    mem = Case(trainable=False).memory
    assert not any(p.requires_grad for p in mem.parameters())
    seg = Case().segmenter  # the memory's modules save and load with the segmenter
    assert any(k.startswith("memory.mca.modulation.") for k in seg.state_dict())


# ---- the contract of tests/test_memory.py ------------------------------------------------------------------

@torch.no_grad()
def test_states_of_two_videos_are_independent_and_reset_forgets(case):
    feats, pos, masks = case.inputs(6)
    other_feats, _, other_masks = case.inputs(6, seed=7)
    fresh = case.run(case.memory.reset(False, 6), range(6), feats, pos, masks)
    a, b = case.memory.reset(False, 6), case.memory.reset(False, 6)
    for t in range(6):
        ra = case.memory.read(a, t, feats[t], pos)
        case.memory.write(a, t, feats[t], masks[t])
        case.memory.read(b, t, other_feats[t], pos)
        case.memory.write(b, t, other_feats[t], other_masks[t])
        torch.testing.assert_close(ra, fresh[t], rtol=0, atol=0)
    assert not torch.allclose(fresh[3], fresh[0])
    again = case.run(case.memory.reset(False, 6), range(6), feats, pos, masks)
    for x, y in zip(again, fresh):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@torch.no_grad()
def test_read_is_pure(case):
    feats, pos, masks = case.inputs(3)
    state = case.memory.reset(False, 3)
    case.run(state, range(2), feats, pos, masks)
    first = case.memory.read(state, 2, feats[2], pos)
    torch.testing.assert_close(case.memory.read(state, 2, feats[2], pos), first, rtol=0, atol=0)
    assert case.memory.size(state) == 2  # the short-term frame is the dynamic one here: held once


@torch.no_grad()
def test_reverse_pass_equals_forward_pass_over_the_reversed_frames(case):
    n, k = 14, 12  # past one training update and two at delta 2/10 (eval here: delta 10 at step 10)
    feats, pos, masks = case.inputs(n)
    for training in (False, True):
        back = case.run(case.memory.reset(training, n, start=k, reverse=True), range(k, -1, -1), feats, pos, masks)
        flipped = [k - i for i in range(k + 1)]
        fwd = case.run(case.memory.reset(training, k + 1), range(k + 1), feats[flipped], pos, masks[flipped])
        for x, y in zip(back, fwd):
            torch.testing.assert_close(x, y)
    with pytest.raises(ValueError, match="before the start frame"):
        case.memory.read(case.memory.reset(False, n, start=k, reverse=True), k + 1, feats[0], pos)
    with pytest.raises(ValueError, match="before the start frame"):
        case.memory.write(case.memory.reset(False, n, start=k, reverse=True), k + 1, feats[0], masks[0])


@torch.no_grad()
def test_objects_of_one_batch_are_independent(case):
    feats, pos, masks = case.inputs(5, batch=2)
    changed = masks.clone()
    changed[:, 1] = -changed[:, 1]
    a = case.run(case.memory.reset(False, 5), range(5), feats, pos, masks)
    b = case.run(case.memory.reset(False, 5), range(5), feats, pos, changed)
    torch.testing.assert_close(a[-1][0], b[-1][0])
    assert not torch.allclose(a[-1][1], b[-1][1])
    # objects of one video (joint_objects) do read each other's masks
    c = case.run(case.memory.reset(False, 5, joint_objects=True), range(5), feats, pos, masks)
    d = case.run(case.memory.reset(False, 5, joint_objects=True), range(5), feats, pos, changed)
    assert not torch.allclose(c[-1][0], d[-1][0])


def test_gradients_reach_earlier_writes_only_end_to_end(case):
    feats, pos, masks = case.inputs(3)
    feats.requires_grad_(True)
    masks.requires_grad_(True)
    state = case.memory.reset(True, 3)
    reads = case.run(state, range(3), feats, pos, masks)
    reads[-1].sum().backward()
    reached = masks.grad is not None and masks.grad[0].abs().sum() > 0
    assert reached == case.memory.end_to_end
    assert feats.grad[2].abs().sum() > 0  # the current frame always reaches its read


def test_gradients_reach_the_mca_through_a_merged_dynamic_frame():
    case = Case()
    feats, pos, masks = case.inputs(4)
    reads = case.run(case.memory.reset(True, 4), range(4), feats, pos, masks)  # delta 2: merged at step 2
    reads[-1].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in case.memory.mca.parameters())


def test_state_dict_round_trip_is_strict_and_exact(case):
    feats, pos, masks = case.inputs(6)  # in training (delta 2): the MCA merges at steps 2 and 4
    args = {k: getattr(case.memory, k) for k in ("key_dim", "value_dim", "heads", "delta_train", "delta_eval",
                                                 "short_term", "trainable", "end_to_end", "encode_conditioned")}
    other = Case(**args, seed=5)
    with torch.no_grad():
        before = case.run(case.memory.reset(True, 6), range(6), feats, pos, masks)
        assert not torch.allclose(other.run(other.memory.reset(True, 6), range(6), feats, pos, masks)[-1],
                                  before[-1])
        other.segmenter.load_state_dict(case.segmenter.state_dict(), strict=True)
        after = other.run(other.memory.reset(True, 6), range(6), feats, pos, masks)
    for x, y in zip(before, after):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@torch.no_grad()
def test_segmenter_step_runs_with_the_memory():
    case = Case(encode_conditioned=True)
    seg, sam = case.segmenter, case.segmenter.sam
    images = torch.randn(3, 3, sam.image_size, sam.image_size, generator=torch.Generator().manual_seed(3))
    prompt = torch.randn(1, 1, sam.sam_prompt_embed_dim)
    state = seg.reset(num_frames=3)
    for t in range(3):
        out = seg.step(state, t, seg.encode_image(images[t:t + 1]), sparse_BNC=prompt)
        assert out.high_res_logits.shape == (1, 1, sam.image_size, sam.image_size)
    assert seg.memory.size(state) == 3


@torch.no_grad()
def test_the_no_memory_token_is_read_by_an_empty_state_only():
    case = Case()
    feats, pos, masks = case.inputs(3)
    before = case.run(case.memory.reset(False, 3), range(3), feats, pos, masks)
    case.memory.no_memory.add_(1.0)
    after = case.run(case.memory.reset(False, 3), range(3), feats, pos, masks)
    assert not torch.allclose(before[0], after[0])
    for x, y in zip(before[1:], after[1:]):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# ---- the read and the merge against naive forms -----------------------------------------------------------

def _naive_attention(q_LD, k_SD, v_SE):
    """softmax(q k^T / sqrt(d)) v, one query row at a time with an explicit softmax."""
    rows = []
    for q in q_LD:
        scores = torch.stack([torch.dot(q, k) for k in k_SD]) / k_SD.size(1) ** 0.5
        weights = torch.exp(scores - scores.max())
        rows.append((weights[:, None] * v_SE).sum(0) / weights.sum())
    return torch.stack(rows)


@torch.no_grad()
def test_a_read_attends_to_the_reference_dynamic_and_previous_frames_each_by_its_own_keys():
    """Frames 0 (given mask), 1, 2, 3 written with delta 2 (training): reference 0, dynamic MCA(2, 1), short-term 3.
    The read of frame 4 equals the naive form built from each frame's own features: keys key(feat_t), values of
    feat_t and mask_t, the merge computed by hand (new + softmax(q(norm new) k(norm old)^T) FM(norm old), + MLP).
    Keys of the wrong frame, a swapped merge or a missing frame change it."""
    case = Case(seed=3, short_term=True, delta_train=2)
    memory = case.memory
    feats, pos, masks = case.inputs(5)
    state = memory.reset(True, 5)
    for t in range(4):
        memory.write(state, t, feats[t], masks[t], is_cond=t == 0)
    got = memory.read(state, 4, feats[4], pos)

    def tokens(x):
        return x[0].flatten(1).T  # (HW, D) of batch item 0

    def frame(t):
        keys = memory.key(tokens(feats[t]))
        values = tokens(memory.values(feats[t], masks[t], None))
        return keys, values

    def merge(new, old):
        mca = memory.mca
        x, o = torch.cat(new, 1), mca.norm(torch.cat(old, 1))
        H = case.H
        context = tokens(mca.modulation(o.T.reshape(1, -1, H, H)))
        x = x + _naive_attention(mca.q(mca.norm(x)), mca.k(o), context)
        x = x + mca.mlp(x)
        return x.split([memory.key_dim, memory.value_dim], 1)

    dynamic = merge(frame(2), frame(1))
    stored = [frame(0), dynamic, frame(3)]
    keys = torch.cat([k for k, _ in stored])
    values = torch.cat([v for _, v in stored])
    x = tokens(feats[4])
    x = x + memory.out(_naive_attention(memory.key(x), keys, values))
    x = x + memory.mlp(x)
    expected = x.T.reshape(1, case.C, case.H, case.H)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
