import math

import torch

from glus.model.contrastive import TokenBank, TokenKey, gather_across_ranks, object_contrastive_loss


def _key(video, exp, frame, objs):
    return TokenKey(video, exp, frame, tuple(objs))


def test_infonce_against_hand_computation():
    bank = TokenBank(512)
    neg = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    bank.add(neg, [_key("other", "0", 0, (1,)), _key("other", "1", 0, (2,))])
    bank.add(torch.tensor([[1.0, 0.0]]), [_key("v", "b", 5, (3,))])  # positive: same video+frame+objects
    anchor = torch.tensor([[2.0, 0.0]], requires_grad=True)
    loss = object_contrastive_loss(anchor, [_key("v", "a", 5, (3,))], bank, num_negatives=2, tau=0.5)
    # cosines: positive 1, negatives 0 and 0 -> -log(e^2 / (e^2 + 2))
    assert math.isclose(loss.item(), -math.log(math.exp(2) / (math.exp(2) + 2)), rel_tol=1e-6)
    loss.backward()
    assert anchor.grad is not None and bank.embeddings[0].grad is None  # the bank is detached


def test_anchor_needs_a_positive_and_enough_negatives():
    bank = TokenBank(4)
    bank.add(torch.randn(2, 3), [_key("x", "0", 0, (1,)), _key("v", "b", 1, (9,))])  # different objects: no positive
    anchor = torch.randn(1, 3)
    assert object_contrastive_loss(anchor, [_key("v", "a", 1, (3,))], bank, num_negatives=1) is None
    bank.add(torch.randn(1, 3), [_key("v", "c", 1, (3,))])
    assert object_contrastive_loss(anchor, [_key("v", "a", 1, (3,))], bank, num_negatives=3) is None  # 2 negatives
    assert object_contrastive_loss(anchor, [_key("v", "a", 1, (3,))], bank, num_negatives=2) is not None


def test_bank_is_fifo_and_round_trips():
    bank = TokenBank(3)
    bank.add(torch.arange(8.0).view(4, 2), [_key("v", str(i), i, (i,)) for i in range(4)])
    assert len(bank) == 3 and bank.keys[0].expression == "1"
    other = TokenBank(3)
    other.load_state_dict(bank.state_dict())
    assert list(other.keys) == list(bank.keys) and torch.equal(torch.stack(list(other.embeddings)),
                                                               torch.stack(list(bank.embeddings)))


def test_hard_negatives_come_from_the_anchors_own_video_first():
    bank = TokenBank(64)
    others = torch.tensor([[0.0, 1.0]]).repeat(20, 1)          # cosine 0 with the anchor
    bank.add(others, [_key(f"o{i}", "0", 0, (1,)) for i in range(20)])
    bank.add(torch.tensor([[1.0, 0.0]]), [_key("v", "b", 5, (3,))])        # positive
    bank.add(torch.tensor([[-1.0, 0.0]]), [_key("v", "c", 5, (4,))])       # look-alike in the same video
    anchor = torch.tensor([[1.0, 0.0]])
    key = [_key("v", "a", 5, (3,))]
    hard = object_contrastive_loss(anchor, key, bank, num_negatives=1, tau=1.0, hard_negatives=True)
    # the only negative drawn is the same-video one (cosine -1): -log(e / (e + e^-1))
    assert math.isclose(hard.item(), -math.log(math.e / (math.e + math.exp(-1))), rel_tol=1e-6)
    g = torch.Generator().manual_seed(0)
    random = object_contrastive_loss(anchor, key, bank, num_negatives=1, tau=1.0, generator=g)
    assert math.isclose(random.item(), -math.log(math.e / (math.e + 1)), rel_tol=1e-6)  # 21 of 22: another video


def _gather_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    count = [2, 0, 1][rank]  # rank 1 has no anchor of its own and must still join the collective
    embeddings = torch.full((count, 3), float(rank), requires_grad=True)
    keys = [_key(f"v{rank}", str(i), i, (rank,)) for i in range(count)]
    bank = TokenBank(8)
    bank.add(*gather_across_ranks(embeddings, keys))
    torch.save(bank.state_dict(), f"{out_dir}/bank{rank}.pt")
    dist.destroy_process_group()


def test_every_rank_adds_every_ranks_anchors(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_gather_worker, args=(3, str(tmp_path / "init"), str(tmp_path)), nprocs=3)
    banks = [torch.load(tmp_path / f"bank{r}.pt") for r in range(3)]
    expected_keys = [("v0", "0", 0, [0]), ("v0", "1", 1, [0]), ("v2", "0", 0, [2])]
    for bank in banks:  # identical on every rank, in rank order
        assert bank["keys"] == expected_keys
        torch.testing.assert_close(bank["embeddings"], torch.tensor([[0.0] * 3, [0.0] * 3, [2.0] * 3]))
    embeddings = torch.ones(2, 3, requires_grad=True)  # one process: the input itself, detached
    gathered, keys = gather_across_ranks(embeddings, ["a", "b"])
    assert keys == ["a", "b"] and not gathered.requires_grad and torch.equal(gathered, embeddings.detach())
