"""The memory contract: every memory behind `glus.model.memory.Memory` passes the same suite (the SAM-2 bank in
its published and end-to-end settings, and the plain-VOS memories), and the SAM-2 bank reads exactly the
published GLUS memory positions."""
import pytest
import torch

from glus.model.build.tiny import E2E_MEMORY
from glus.model.memory import SAM2MemoryBank, memory_steps
from glus.model.segmenter import SAM2Segmenter

SAM2_BANKS = {"sam2_published": {}, "sam2_e2e": E2E_MEMORY}  # specs: SAM2MemoryBank arguments
MEMORIES = {**SAM2_BANKS,
            "gated_linear": {"class_path": "glus.model.memory.gated_linear.GatedLinearMemory",
                             "init_args": {"key_dim": 8, "value_dim": 16}},
            "mca": {"class_path": "glus.model.memory.mca.MCAMemory", "init_args": {"key_dim": 8, "value_dim": 16}}}


class Case:
    """A memory bound to a tiny segmenter, with random inputs of the right shapes."""

    def __init__(self, spec: dict, seed: int = 0):
        torch.manual_seed(seed)
        self.spec = spec  # a second model of the same memory (state_dict round trip) is built from it
        self.segmenter = SAM2Segmenter("tiny", memory=dict(spec)).eval()  # no dropout: reads are comparable
        self.memory = self.segmenter.memory
        sam = self.segmenter.sam
        self.C, self.H, self.S = sam.hidden_dim, sam.image_size // 16, sam.image_size
        with torch.no_grad():  # SAM-2 initialises some embeddings to zero: make every input matter
            for p in self.segmenter.parameters():
                p.add_(torch.randn_like(p) * 0.05)

    def inputs(self, frames: int, batch: int = 1, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        feats = torch.randn(frames, batch, self.C, self.H, self.H, generator=g)
        pos = torch.randn(batch, self.C, self.H, self.H, generator=g)
        masks = torch.randn(frames, batch, 1, self.S, self.S, generator=g) * 4
        return feats, pos, masks

    def run(self, state, order, feats, pos, masks):
        """Read then write each frame of `order` (frame index -> inputs); the reads, in order."""
        reads = []
        for t in order:
            reads.append(self.memory.read(state, t, feats[t], pos))
            self.memory.write(state, t, feats[t], masks[t])
        return reads


@pytest.fixture(params=sorted(MEMORIES))
def case(request):
    return Case(MEMORIES[request.param])


@torch.no_grad()
def test_states_of_two_videos_are_independent_and_reset_forgets(case):
    feats, pos, masks = case.inputs(6)
    other_feats, _, other_masks = case.inputs(6, seed=7)
    fresh = case.run(case.memory.reset(False, 6), range(6), feats, pos, masks)
    a, b = case.memory.reset(False, 6), case.memory.reset(False, 6)
    for t in range(6):  # interleaved: video b's writes must not reach video a's reads
        ra = case.memory.read(a, t, feats[t], pos)
        case.memory.write(a, t, feats[t], masks[t])
        case.memory.read(b, t, other_feats[t], pos)
        case.memory.write(b, t, other_feats[t], other_masks[t])
        torch.testing.assert_close(ra, fresh[t], rtol=0, atol=0)
    assert not torch.allclose(fresh[3], fresh[0])  # memory changes what is read
    again = case.run(case.memory.reset(False, 6), range(6), feats, pos, masks)
    for x, y in zip(again, fresh):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@torch.no_grad()
def test_reverse_pass_equals_forward_pass_over_the_reversed_frames(case):
    n, k = 9, 7
    feats, pos, masks = case.inputs(n)
    back = case.run(case.memory.reset(False, n, start=k, reverse=True), range(k, -1, -1), feats, pos, masks)
    flipped = [k - i for i in range(k + 1)]
    fwd = case.run(case.memory.reset(False, k + 1), range(k + 1), feats[flipped], pos, masks[flipped])
    for x, y in zip(back, fwd):
        torch.testing.assert_close(x, y)
    with pytest.raises(ValueError, match="before the start frame"):
        case.memory.read(case.memory.reset(False, n, start=k, reverse=True), k + 1, feats[0], pos)


@torch.no_grad()
def test_objects_of_one_batch_are_independent(case):
    feats, pos, masks = case.inputs(5, batch=2)
    changed = masks.clone()
    changed[:, 1] = -changed[:, 1]  # another mask for object 1 only
    a = case.run(case.memory.reset(False, 5), range(5), feats, pos, masks)
    b = case.run(case.memory.reset(False, 5), range(5), feats, pos, changed)
    torch.testing.assert_close(a[-1][0], b[-1][0])
    assert not torch.allclose(a[-1][1], b[-1][1])


def test_gradients_reach_earlier_writes_only_end_to_end(case):
    feats, pos, masks = case.inputs(3)
    feats.requires_grad_(True)  # the current frame's features always reach the read
    masks.requires_grad_(True)
    state = case.memory.reset(True, 3)
    reads = case.run(state, range(3), feats, pos, masks)
    reads[-1].sum().backward()
    reached = masks.grad is not None and masks.grad[0].abs().sum() > 0
    assert reached == case.memory.end_to_end


def test_state_dict_round_trip_is_strict_and_exact(case):
    feats, pos, masks = case.inputs(4)
    other = Case(case.spec, seed=5)
    with torch.no_grad():
        before = case.run(case.memory.reset(False, 4), range(4), feats, pos, masks)
        assert not torch.allclose(other.run(other.memory.reset(False, 4), range(4), feats, pos, masks)[-1],
                                  before[-1])
        other.segmenter.load_state_dict(case.segmenter.state_dict(), strict=True)
        after = other.run(other.memory.reset(False, 4), range(4), feats, pos, masks)
    for x, y in zip(before, after):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@torch.no_grad()
def test_state_stays_bounded_on_a_long_video(case):
    n = 60
    feats, pos, masks = case.inputs(n)
    state = case.memory.reset(False, n)
    sizes = []
    for t in range(n):
        case.memory.read(state, t, feats[t], pos)
        case.memory.write(state, t, feats[t], masks[t])
        sizes.append(case.memory.size(state))
    # what a later frame can still read, and no more: the bank's memories; one state for the recurrent ones
    assert max(sizes) <= getattr(case.memory, "num_memories", 1)
    assert max(sizes[30:]) == max(sizes[:30])  # flat, not growing with the video


# ---- the published positions -----------------------------------------------------------------------------

def published_positions(t: int, r: int) -> set[int]:
    """model/GLUS.py of the published code: t-1 and ((t-2)//r)*r - k*r for k = 0..5; negatives skipped."""
    return {p for p in [t - 1] + [((t - 2) // r) * r - k * r for k in range(6)] if p >= 0}


@pytest.mark.parametrize("stride", [3, 1])
def test_the_bank_reads_the_published_seven_memory_positions(stride):
    for t in range(41):
        assert {s for _, s in memory_steps(t, 7, stride)} == published_positions(t, stride)
    assert len(published_positions(40, stride)) == 7
    # and the bank, pruning as it goes, still holds each of them when frame t reads
    case = Case({"stride_eval": stride})
    feats, pos, masks = case.inputs(41)
    state = case.memory.reset(False, 41)
    with torch.no_grad():
        for t in range(41):
            assert set(published_positions(t, stride)) <= set(state.memories), t  # none pruned too early
            assert len(case.memory.selected(state, t)) == len(published_positions(t, stride)), t
            case.memory.read(state, t, feats[t], pos)
            case.memory.write(state, t, feats[t], masks[t])


def test_published_defaults_and_the_training_stride():
    bank = SAM2MemoryBank()
    assert (bank.num_memories, bank.stride_train, bank.stride_eval) == (7, 1, 3)
    assert not (bank.temporal_encoding or bank.object_pointers or bank.no_object_embedding or bank.end_to_end
                or bank.trainable)
    assert bank.reset(True).stride == 1 and bank.reset(False).stride == 3
    seg = SAM2Segmenter("tiny")  # the published bank: its SAM-2 modules frozen
    assert not any(p.requires_grad for n, p in seg.sam.named_parameters() if n.startswith("memory_"))


@pytest.mark.parametrize("name", sorted(SAM2_BANKS))
@torch.no_grad()
def test_only_our_variant_reads_temporal_and_no_object_embeddings(name):
    """The published bank: no temporal encoding, no no-object embedding (model/GLUS.py uses the memory's own
    position encoding and calls the memory encoder without object scores)."""
    case = Case(SAM2_BANKS[name])
    feats, pos, masks = case.inputs(5)
    scores = torch.full((1, 1), -3.0)  # "absent": the no-object embedding applies where it is on

    def run():
        state, out = case.memory.reset(False, 5), None
        for t in range(5):
            out = case.memory.read(state, t, feats[t], pos)
            case.memory.write(state, t, feats[t], masks[t], object_score_logits_B1=scores)
        return out

    before = run()
    sam = case.segmenter.sam
    sam.maskmem_tpos_enc.add_(1.0)
    after_tpos = run()
    sam.no_obj_embed_spatial.add_(1.0)
    after_no_obj = run()
    variant = name != "sam2_published"
    assert (not torch.allclose(before, after_tpos)) == variant
    assert (not torch.allclose(after_tpos, after_no_obj)) == variant


@pytest.mark.parametrize("name", sorted(SAM2_BANKS))
@torch.no_grad()
def test_memories_encode_the_published_features(name):
    """The published GLUS encodes a frame's memory from its memory-conditioned features (model/GLUS.py:
    get_visual_embs overwrites the features it returns); SAM-2 (our variant) from the image features."""
    case = Case(SAM2_BANKS[name])
    seg, sam = case.segmenter, case.segmenter.sam
    images = torch.randn(3, 3, sam.image_size, sam.image_size, generator=torch.Generator().manual_seed(3))
    prompt = torch.randn(1, 1, sam.sam_prompt_embed_dim)
    state = seg.reset(num_frames=3)
    for t in range(3):
        feats = seg.encode_image(images[t:t + 1])
        top, pos = feats.top(), feats.top_pos()
        conditioned = seg.memory.read(state, t, top, pos)  # what step reads for frame t (read is pure)
        out = seg.step(state, t, feats, sparse_BNC=prompt)
        published = name == "sam2_published"
        source = conditioned if published else top
        scores = torch.ones(1, 1) if published else out.object_score_logits  # e2e: the no-object embedding
        expected, _ = sam._encode_new_memory(
            current_vision_feats=[source.flatten(2).permute(2, 0, 1)], feat_sizes=[tuple(top.shape[-2:])],
            pred_masks_high_res=out.high_res_logits, object_score_logits=scores, is_mask_from_pts=False)
        torch.testing.assert_close(state.memories[t][0], expected)
    assert not torch.allclose(conditioned, top)  # the two sources differ: the test tells them apart
