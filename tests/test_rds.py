"""RDS on SAM-2's Hiera trunk (glus.model.segmenter.rds, .ilora): which blocks may be skipped, that skipped blocks
never run (block calls counted), that keeping every block is the plain encoder, the straight-through gate and the
budget loss, the router's prior, I-LoRA's importance and adapters, and the VOS path trained and run with it."""
from __future__ import annotations

import json

import pytest
import torch
from sam2.modeling.backbones.hieradet import Hiera

from glus.model.segmenter import SAM2Segmenter
from glus.model.segmenter.build import sam2_config
from glus.model.segmenter.ilora import apply_encoder_lora, block_importance
from glus.model.segmenter.rds import RoutePrior, budget_loss, skippable_blocks, top_k_keep

DEEP = {"image_encoder": {"trunk": {"stages": [1, 2, 7, 2], "global_att_blocks": [5, 7, 9]}}}  # Hiera-T's depths


def _segmenter(**kw) -> SAM2Segmenter:
    torch.manual_seed(0)
    return SAM2Segmenter("tiny", 128, overrides=DEEP, **kw).eval()


@pytest.mark.parametrize("name,transitions", [("sam2_hiera_t", [1, 3, 10]), ("sam2_hiera_b+", [2, 5, 21]),
                                              ("sam2_hiera_l", [2, 8, 44])])
def test_stage_transitions_always_run(name, transitions):
    """The published configs' depths (built at width 8: the block layout does not depend on the width)."""
    cfg = sam2_config(name).model.image_encoder.trunk
    stages = tuple(cfg.get("stages", (2, 3, 16, 3)))  # B+'s config leaves Hiera's default
    trunk = Hiera(embed_dim=8, num_heads=1, stages=stages)
    assert trunk.q_pool_blocks == transitions
    assert skippable_blocks(trunk) == [i for i in range(sum(stages)) if i not in transitions and i >= stages[0]]


def _count_calls(trunk):
    calls = {i: 0 for i in range(len(trunk.blocks))}
    hooks = [blk.register_forward_hook(lambda m, i, o, k=k: calls.__setitem__(k, calls[k] + 1))
             for k, blk in enumerate(trunk.blocks)]
    return calls, hooks


def test_skipped_blocks_are_not_executed_and_the_features_say_which_ran():
    seg = _segmenter(rds={"keep_ratio": 0.5})
    trunk = seg.sam.image_encoder.trunk
    with torch.no_grad():  # a router that prefers the early skippable blocks
        seg.rds.router.mlp[2].bias.copy_(torch.linspace(2, -2, len(seg.rds.skippable)))
    calls, hooks = _count_calls(trunk)
    with torch.no_grad():
        feats = seg.encode_image(torch.randn(1, 3, 128, 128))
    for h in hooks:
        h.remove()
    kept = [b for b, k in zip(seg.rds.skippable, feats.routing.keep[0].tolist()) if k]
    assert kept == [2, 4, 5, 6]  # round(0.5 x 8) blocks, the router's four highest
    ran = sorted(i for i, n in calls.items() if n)
    assert ran == sorted([0, 1, 3, 10] + kept) and all(n <= 1 for n in calls.values())
    assert sorted([0] + feats.routing.ran) == ran  # the record, minus the always-run first stage


def test_keeping_every_block_is_the_plain_encoder():
    seg = _segmenter(rds={"keep_ratio": 1.0})
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        routed = seg.encode_image(x)
        plain = seg.sam.image_encoder(x)
    assert torch.equal(routed.top(), plain["vision_features"])
    assert routed.routing.keep.all()


def test_a_batch_with_different_decisions_equals_its_frames_one_by_one():
    seg = _segmenter(rds={"keep_ratio": 0.5})
    x = torch.randn(2, 3, 128, 128)
    keep = torch.tensor([[1, 0, 1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1, 0, 1]], dtype=torch.float)
    seg.rds._decide = lambda logits: (keep[:len(logits)] if len(logits) == 2 else keep[seg._row:seg._row + 1],
                                      None, None)
    with torch.no_grad():
        both = seg.encode_image(x).top()
        singles = []
        for row in range(2):
            seg._row = row
            singles.append(seg.encode_image(x[row:row + 1]).top())
    torch.testing.assert_close(both, torch.cat(singles), rtol=1e-5, atol=1e-6)


def test_training_gate_is_straight_through_and_the_budget_loss_by_hand():
    assert float(budget_loss(torch.tensor([[0.5, 1.0]]), 0.5)) == pytest.approx(0.0625)
    assert top_k_keep(torch.tensor([[0.1, 3.0, -1.0, 2.0]]), 0.5).tolist() == [[0, 1, 0, 1]]
    # 8 skippable blocks (the deep tiny encoder) at the recipes' 0.8 and 0.6: round(6.4) = 6, round(4.8) = 5
    # blocks kept, the largest logits (counted by hand; a floor would keep 4 at 0.6, a ceil 7 at 0.8)
    logits = torch.tensor([[0.3, -2.0, 1.5, 0.9, -0.4, 2.2, 0.0, 1.1]])
    assert top_k_keep(logits, 0.8).tolist() == [[1, 0, 1, 1, 0, 1, 1, 1]]
    assert top_k_keep(logits, 0.6).tolist() == [[1, 0, 1, 1, 0, 1, 0, 1]]
    seg = _segmenter(rds={"keep_ratio": 0.5})
    seg.train()
    x = torch.randn(3, 3, 128, 128)
    feats = seg.encode_image(x, RoutePrior(torch.rand(3, 1, 128, 128)), sequential=True)
    keep, soft = feats.routing.keep, feats.routing.soft
    assert set(keep.unique().tolist()) <= {0.0, 1.0} and soft.shape == keep.shape
    # the forward value is the hard decision: the same frames encoded at inference with these decisions agree
    seg.eval()
    seg.rds._decide = lambda logits: (keep[seg._t:seg._t + 1], None, None)
    with torch.no_grad():
        for t in range(3):
            seg._t = t
            torch.testing.assert_close(seg.encode_image(x[t:t + 1]).top()[0], feats.top()[t].detach(),
                                       rtol=1e-4, atol=1e-5)
    seg.train()
    del seg.rds._decide
    feats = seg.encode_image(x, RoutePrior(torch.rand(3, 1, 128, 128)), sequential=True)
    (feats.top().square().mean() + seg.rds.loss(feats.routing)).backward()
    grad = seg.rds.router.mlp[2].weight.grad
    assert grad is not None and grad.abs().sum() > 0  # through the gates, with the trunk frozen
    assert all(p.grad is None for p in seg.sam.image_encoder.parameters())


def test_the_router_reads_the_previous_mask_and_routing():
    seg = _segmenter(rds={"keep_ratio": 0.5})
    torch.nn.init.normal_(seg.rds.router.mlp[2].weight)
    x = torch.randn(1, 3, 128, 128)
    early = seg.sam.image_encoder.trunk.patch_embed(x)
    early = seg.sam.image_encoder.trunk.blocks[0](early + seg.sam.image_encoder.trunk._get_pos_embed(early.shape[1:3]))
    left, right = torch.zeros(1, 1, 128, 128), torch.zeros(1, 1, 128, 128)
    left[..., :64], right[..., 64:] = 1, 1
    router = seg.rds.router
    with torch.no_grad():
        logits = [router(early, RoutePrior(m, k)) for m, k in
                  [(None, None), (left, None), (right, None), (left, torch.zeros(1, 8))]]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.allclose(logits[a], logits[b]), (a, b)


def test_block_importance_and_lora_on_the_top_blocks(tmp_path):
    seg = _segmenter()
    encoder = seg.sam.image_encoder
    report = block_importance(encoder, [torch.randn(2, 3, 128, 128), torch.randn(1, 3, 128, 128)])
    assert report["frames"] == 3 and sorted(report["ranking"]) == [2, 4, 5, 6, 7, 8, 9, 11]
    scores = [report["blocks"][str(b)]["score"] for b in report["ranking"]]
    assert scores == sorted(scores, reverse=True) and max(scores) <= 1.0 and min(scores) >= 0.0
    path = tmp_path / "importance.json"
    path.write_text(json.dumps(report))
    lora = _segmenter(encoder_lora={"importance": str(path), "top_k": 3, "r": 4})
    top = sorted(report["ranking"][:3])
    trainable = {n: p.numel() for n, p in lora.sam.image_encoder.named_parameters() if p.requires_grad}
    assert {int(n.split(".")[2]) for n in trainable} == set(top)
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    dims = {b: lora.sam.image_encoder.trunk.blocks[b].dim for b in top}
    # per block: qkv (dim -> 3 dim) and proj (dim -> dim) adapters of rank 4: 4 (dim + 3 dim) + 4 (dim + dim)
    assert sum(trainable.values()) == sum(4 * (d + 3 * d) + 4 * (d + d) for d in dims.values())
    with pytest.raises(ValueError, match="not shape-preserving"):
        _segmenter(encoder_lora={"blocks": [3]})
    with pytest.raises(FileNotFoundError, match="glus rds importance"):
        _segmenter(encoder_lora={"importance": str(tmp_path / "missing.json")})


def test_vos_path_trains_and_propagates_with_rds():
    from glus.data.generated import GeneratedVideo
    from glus.data.frames import load_frames
    from glus.infer.vos import propagate
    from glus.model.vos import VOSClipBatch, VOSBuilder

    model, _ = VOSBuilder(sam_config="tiny", sam_image_size=128, memory={"class_path": "glus.model.memory.NoMemory"},
                          segmenter={"overrides": DEEP, "rds": {"keep_ratio": 0.5}}).build()
    model.train()
    masks = torch.zeros(2, 3, 64, 96, dtype=torch.bool)
    masks[0, :, 10:30, 10:30], masks[1, :, 40:60, 50:80] = True, True
    clip = VOSClipBatch(torch.randn(3, 3, 128, 128), masks)
    logits, routing = model.run_clip(clip)
    losses = model.losses(logits, clip, routing)
    assert {"budget", "kept"} <= set(losses) and routing.soft.shape == (3, 8)
    losses["loss"].backward()
    assert model.segmenter.rds.router.mlp[2].weight.grad is not None
    model.eval()
    video = GeneratedVideo(4, 96, 64, seed=1)
    out = list(propagate(model, lambda t: load_frames(video, [t])[0], masks[:, 0], 1, 4))
    assert [t for t, _ in out] == [1, 2, 3, 0] and all(l.shape == (2, 64, 96) for _, l in out)


def test_the_rds_recipes_chain_runs_and_the_export_reloads(tmp_path, synth_root):
    """make train RECIPE=rds_synthetic, two steps a stage: the full-encoder model, its block importance, the RDS
    fine-tune from it (init_from), and the fine-tuned export reloading with router and adapters."""
    from pathlib import Path

    import yaml

    from glus.cli import main
    from glus.model.weights.load import load_export
    from glus.train.cli import fit

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    runs = tmp_path / "runs"
    short = tmp_path / "short.yaml"
    short.write_text(yaml.safe_dump({
        "trainer": {"max_steps": 2, "log_every_n_steps": 1},
        "model": {"init_args": {"warmup_steps": 1, "total_steps": 2, "evaluation": None}},
        "data": {"init_args": {"root": str(synth_root), "batch_size": 1, "steps_per_epoch": 2, "num_workers": 0,
                               "clip": {"num_frames": 3, "max_objects": 2, "sam_size": 128}}}}))
    base = [str(recipes / "vos_synthetic.yaml"), str(recipes / "rds" / "tiny_deep.yaml")]
    fit(["--config", base[0], "--config", base[1], "--config", str(short)], runs_root=str(runs), name="full",
        wandb="disabled")
    full = (runs / "full" / "latest" / "export").resolve()
    importance = tmp_path / "importance.json"
    assert main(["rds", "importance", "--ckpt", str(full), "--data", "mevis/train", "--root", str(synth_root),
                 "--frames", "4", "--out", str(importance)]) == 0
    assert len(json.loads(importance.read_text())["ranking"]) == 8
    overlay = tmp_path / "rds.yaml"
    overlay.write_text(yaml.safe_dump({"model": {"init_args": {"builder": {"init_args": {
        "init_from": str(full), "encoder_lora": {"importance": str(importance), "top_k": 2, "r": 2}}}}}}))
    cli = fit(["--config", base[0], "--config", base[1], "--config", str(recipes / "rds" / "rds_synthetic.yaml"),
               "--config", str(short), "--config", str(overlay)], runs_root=str(runs), name="rds", wandb="disabled")
    assert cli.trainer.global_step == 2
    model, _, _ = load_export(runs / "rds" / "latest" / "export")
    assert model.segmenter.rds.keep_ratio == 0.8
    adapters = {n.split(".")[5] for n, _ in model.named_parameters() if "lora_" in n}
    assert len(adapters) == 2
    for name, p in cli.model.model.named_parameters():  # the trained tensors, router and adapters included
        assert torch.equal(p, dict(model.named_parameters())[name]), name


def test_random_choice_keeps_as_many_blocks_as_the_router():
    """The control of `glus vos-eval --rds-choice random`: the same count per frame, other blocks, reproducible."""
    seg = _segmenter(rds={"keep_ratio": 0.5})
    with torch.no_grad():
        seg.rds.router.mlp[2].bias.copy_(torch.linspace(2, -2, len(seg.rds.skippable)))
        x = torch.randn(6, 3, 128, 128)
        router = seg.encode_image(x).routing.keep
        seg.rds.choice = "random"
        drawn = seg.encode_image(x).routing.keep
        del seg.rds._random
        again = seg.encode_image(x).routing.keep
    assert (drawn.sum(1) == router.sum(1)).all() and (drawn.sum(1) == 4).all()
    assert not torch.equal(drawn, router) and torch.equal(drawn, again)
    seg.rds.choice = "best"
    with pytest.raises(ValueError, match="'router' or 'random'"):
        seg.encode_image(x[:1])
