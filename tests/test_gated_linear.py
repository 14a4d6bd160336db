"""LiVOS' gated linear memory: the per-frame recurrence equals attention from each frame to every pixel of every
earlier frame with cumulative gates, under both normalisers; gates, the no-memory read, joint objects, and a
state that does not grow with the video. (The shared memory contract runs in tests/test_memory.py.)"""
import pytest
import torch

from glus.model.memory import GatedLinearMemory
from tests.test_memory import Case

PATH = "glus.model.memory.gated_linear.GatedLinearMemory"


def spec(**kw) -> dict:
    return {"class_path": PATH, "init_args": {"key_dim": 8, "value_dim": 16, **kw}}


def naive_readouts(memory, qs, ks, vs, gs):
    """Readout of each step t >= 1 of a pass, in float64, without a state: phi(q_t) attends to every pixel of
    every step i < t, whose values reach step t through the gates of the steps between them,
    prod_{j=i+1}^{t-1} g_j; z is the pass' normaliser over the same, ungated, keys."""
    qs, ks, vs, gs = ([x.double() for x in xs] for xs in (qs, ks, vs, gs))
    out = []
    for t in range(1, len(qs)):
        q = qs[t]
        num, z_pix, z_aligned = 0, 0, 0
        for i in range(t):
            decay = torch.ones_like(gs[i])
            for j in range(i + 1, t):
                decay = decay * gs[j]
            A = torch.einsum("bkp,bkq->bpq", q, ks[i])  # query pixel p, memory pixel q
            num = num + torch.einsum("bpq,bvq->bvp", A, decay[:, :, None] * vs[i])
            z_pix = z_pix + A.sum(-1)                                      # over all pixels and frames
            z_aligned = z_aligned + torch.einsum("bkp,bkp->bp", q, ks[i])  # the same pixel only
        z = z_aligned.sum(1)[:, None, None] if memory.normaliser == "scalar" else z_pix[:, None, :]
        out.append(num / z.clamp_min(memory.eps))
    return out


@pytest.mark.parametrize("normaliser", ["scalar", "pixel"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@torch.no_grad()
def test_recurrence_equals_the_naive_gated_attention(normaliser, reverse):
    case = Case(spec(normaliser=normaliser))
    memory, n, k = case.memory, 7, 5
    feats, pos, masks = case.inputs(n, batch=2)
    order = list(range(k, -1, -1)) if reverse else list(range(n))
    state = memory.reset(False, n, start=k if reverse else 0, reverse=reverse)
    reads, readouts = [], []
    for t in order:
        reads.append(memory.read(state, t, feats[t], pos))
        if state.S is not None:  # the state's own readout, before this frame is written
            readouts.append(memory.readout(memory.keys(feats[t]), state.S, state.key_sum))
        memory.write(state, t, feats[t], masks[t])
    qs = [memory.keys(feats[t]) for t in order]  # the same projection gives queries and keys
    vs = [memory.values(feats[t], masks[t]) for t in order]
    gs = [memory.gate(feats[t]) for t in order]
    expected = naive_readouts(memory, qs, qs, vs, gs)
    B, C, H, W = feats[0].shape
    for t, (r, e) in enumerate(zip(readouts, expected), start=1):
        torch.testing.assert_close(r.double(), e, rtol=1e-5, atol=1e-6 * e.abs().max().item())
        f = feats[order[t]]  # and the read is the frame's features fused with that readout
        fused = f + memory.fuse(torch.cat([f, e.float().view(B, -1, H, W)], 1))
        torch.testing.assert_close(reads[t], fused, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_gates_are_in_the_open_unit_interval_and_act_on_values():
    case = Case(spec())
    feats, _, _ = case.inputs(4, batch=3)
    g = case.memory.gate(feats.flatten(0, 1) * 3)
    assert g.shape == (12, 16) and (g > 0).all() and (g < 1).all()


@torch.no_grad()
def test_an_empty_state_reads_the_learned_no_memory_value():
    case = Case(spec())
    memory = case.memory
    feats, pos, masks = case.inputs(2, batch=2)
    state = memory.reset(False, 2)
    assert memory.size(state) == 0
    out = memory.read(state, 0, feats[0], pos)
    B, C, H, W = feats[0].shape
    none = memory.no_memory[None, :, None, None].expand(B, -1, H, W)
    torch.testing.assert_close(out, feats[0] + memory.fuse(torch.cat([feats[0], none], 1)))
    assert memory.size(state) == 0 and state.S is None  # the read is pure
    memory.no_memory.add_(1.0)
    assert not torch.allclose(memory.read(state, 0, feats[0], pos), out)


@pytest.mark.parametrize("joint", [True, False])
@torch.no_grad()
def test_joint_objects_read_the_other_objects_masks(joint):
    """Objects of one video (joint_objects) encode their values with the others' masks; GLUS' batch items
    (expressions) never see each other."""
    case = Case(spec())
    memory = case.memory
    feats, pos, masks = case.inputs(2, batch=2)
    changed = masks.clone()
    changed[:, 1] = -changed[:, 1]  # object 1's masks only

    def second_read(m):
        state = memory.reset(False, 2, joint_objects=joint)
        memory.write(state, 0, feats[0], m[0])
        return memory.read(state, 1, feats[1], pos)

    a, b = second_read(masks), second_read(changed)
    assert (not torch.allclose(a[0], b[0])) == joint  # object 0 depends on object 1's mask iff joint


@torch.no_grad()
def test_state_is_constant_over_a_long_video():
    case = Case(spec())
    memory = case.memory
    n = 200
    feats, pos, masks = case.inputs(4)  # a 200-frame pass cycling through 4 frames' inputs
    state = memory.reset(False, n)
    sizes, nbytes = [], []
    for t in range(n):
        memory.read(state, t, feats[t % 4], pos)
        memory.write(state, t, feats[t % 4], masks[t % 4], is_cond=t == 0)
        sizes.append(memory.size(state))
        nbytes.append(sum(x.numel() * x.element_size() for x in (state.S, state.key_sum)))
    assert set(sizes) == {1} and len(set(nbytes)) == 1
    assert state.frames == n and torch.isfinite(state.S).all()


def test_without_end_to_end_writes_are_detached_and_write_only_parts_frozen():
    case = Case(spec(end_to_end=False))
    memory = case.memory
    assert not any(p.requires_grad for p in memory.value_encoder.parameters())
    assert not any(p.requires_grad for p in memory.gate_proj.parameters())
    assert all(p.requires_grad for p in [*memory.key_proj.parameters(), *memory.fuse.parameters(), memory.no_memory])
    feats, pos, masks = case.inputs(2)
    state = memory.reset(True, 2)
    memory.write(state, 0, feats[0], masks[0])
    assert not state.S.requires_grad
    memory.read(state, 1, feats[1], pos).sum().backward()
    assert memory.key_proj.weight.grad is not None  # queries still train the key projection
    memory.set_trainable(False)
    assert not any(p.requires_grad for p in memory.parameters())


def test_arguments_and_binding():
    for bad in ({"key_dim": 0}, {"value_dim": 0}, {"normaliser": "softmax"}, {"eps": 0.0}):
        with pytest.raises(ValueError):
            GatedLinearMemory(**bad)
    with pytest.raises(RuntimeError, match="not bound"):
        GatedLinearMemory().keys(torch.zeros(1, 32, 8, 8))
    case = Case(spec())
    memory, sam = case.memory, case.segmenter.sam
    before = {k: v.clone() for k, v in memory.state_dict().items()}
    memory.bind(sam)  # binding again keeps the (trained) weights
    assert all(torch.equal(before[k], v) for k, v in memory.state_dict().items())
    other = Case(spec()).segmenter.sam  # another model of the same sizes: fine
    memory.bind(other)
    sam.image_size = 256
    with pytest.raises(ValueError, match="built for"):
        memory.bind(sam)
