"""glus study naming-probe: the share of one-object expressions whose [SEG] names the referred colour and shape, per
kind, checked with a model rigged to always say "red circle" (so the expected share comes from the captions)."""
import pytest
import torch

from glus.data.cache import load_split
from glus.studies.naming_probe import naming_accuracy, word_ids
from glus.model.weights.export import export_untrained
from glus.model.weights.load import load_export
from glus.model.mllm import PromptBuilder

SPLIT = "mevis/valid_u"


def test_shares_per_kind_match_the_captions_of_a_model_that_always_says_red_circle(tmp_path, synth_root):
    torch.set_num_threads(1)
    args = {"seed": 0, "clip_image_size": 112, "sam_image_size": 128, "clip_resize": "squash"}
    model, tokenizer, _ = load_export(export_untrained(tmp_path / "plain", args))
    prompts = PromptBuilder(tokenizer, tokens_per_frame=model.mllm.tokens_per_frame(), num_context=4)
    index = load_split(synth_root, SPLIT)
    with pytest.raises(ValueError, match="expression"):
        naming_accuracy(model, tokenizer, prompts, index)

    language = model.language
    red, circle = word_ids(tokenizer, ["red", "circle"])

    def rigged(batch):
        out = language(batch)
        out.seg_logits = torch.zeros(*out.seg_hidden.shape[:2], len(tokenizer))
        out.seg_logits[..., red] = out.seg_logits[..., circle] = 1.0
        return out

    model.language = rigged
    report = naming_accuracy(model, tokenizer, prompts, index)
    captions, kinds = index.captions(), index.kinds()
    single = {k: c for k, c in captions.items() if " and " not in c and
              any(e.exp_id == k[1] and e.video == k[0] and len(e.obj_ids) == 1 for e in index.expressions)}
    for kind in set(kinds[k] for k in single):
        cases = [c for k, c in single.items() if kinds[k] == kind]
        assert report[kind]["count"] == len(cases)
        assert report[kind]["named"] == pytest.approx(sum(c.startswith("the red circle") for c in cases) / len(cases))
    # "in_video": a red circle is some object of the video; chance: the video's named objects over 18
    videos = {}
    for (vid, _), caption in single.items():
        videos.setdefault(vid, set()).add(tuple(caption.split()[1:3]))
    for kind in set(kinds[k] for k in single):
        cases = [vid for (vid, e), _ in single.items() if kinds[(vid, e)] == kind]
        assert report[kind]["in_video"] == pytest.approx(sum(("red", "circle") in videos[v] for v in cases) / len(cases))
        assert report[kind]["chance"] == pytest.approx(sum(len(videos[v]) / 18 for v in cases) / len(cases))
    assert any(0 < row["named"] < 1 for row in report.values())


def test_attention_split_by_hand():
    from glus.studies.attention_probe import attention_split

    # 2 heads over 6 key positions, of which 1-4 are visual slots owned by objects 0, 1, background, 0
    attention = torch.tensor([[0.5, 0.1, 0.1, 0.1, 0.1, 0.1], [0.0, 0.3, 0.1, 0.0, 0.2, 0.4]])
    slots = torch.tensor([False, True, True, True, True, False])
    owners = torch.tensor([0, 1, -1, 0])
    # mean over heads on the slots: 0.2, 0.1, 0.05, 0.15 (sum 0.5) -> referred (0) 0.7, other 0.2, background 0.1
    assert attention_split(attention, slots, owners, 0).tolist() == pytest.approx([0.7, 0.2, 0.1])
    assert attention_split(attention, slots, owners, 1).tolist() == pytest.approx([0.2, 0.7, 0.1])


def test_seg_attention_covers_each_one_object_expression_once_per_layer(tmp_path, synth_root):
    from glus.studies.attention_probe import seg_attention

    torch.set_num_threads(1)
    args = {"seed": 0, "clip_image_size": 112, "sam_image_size": 128, "clip_resize": "squash", "llm_layers": 2}
    model, tokenizer, _ = load_export(export_untrained(tmp_path / "plain", args))
    prompts = PromptBuilder(tokenizer, tokens_per_frame=model.mllm.tokens_per_frame(), num_context=4)
    index = load_split(synth_root, SPLIT)
    report = seg_attention(model, prompts, index)
    kinds = index.kinds()
    single = [e for e in index.expressions if len(e.obj_ids) == 1]
    assert {k: r["count"] for k, r in report.items()} == {
        k: sum(kinds[(e.video, e.exp_id)] == k for e in single) for k in report}
    for row in report.values():
        assert len(row["attention"]) == 2 and sum(row["share"].values()) == pytest.approx(1.0)
        assert 0 < row["share"]["referred"] < 0.5
        for layer in row["attention"]:
            assert sum(layer.values()) == pytest.approx(1.0)


def test_pointer_split_by_hand():
    from glus.studies.attention_probe import pointer_split

    logits = torch.logit(torch.tensor([[0.9, 0.7, 0.5, 0.1], [0.8, 0.6, 0.2, 0.0]]).clamp(1e-6, 1 - 1e-6))
    owners = torch.tensor([[0, 1, 2, -1], [0, 1, 1, -1]])  # object 0 referred, 1 its twin, 2 another object
    split = pointer_split(logits, owners, target=0, twins={1})
    assert split == pytest.approx({"referred": 0.85, "twin": 0.5, "other": 0.5, "background": 0.05}, abs=1e-5)
    assert "twin" not in pointer_split(logits, owners, target=0, twins=set())


def test_the_attention_probe_reports_where_the_pointer_points(tmp_path, synth_root):
    from glus.studies.attention_probe import seg_attention

    torch.set_num_threads(1)
    args = {"seed": 0, "clip_image_size": 112, "sam_image_size": 128, "clip_resize": "squash", "pooling": "2x2",
            "pointer": True}
    model, tokenizer, _ = load_export(export_untrained(tmp_path / "pointer", args))
    prompts = PromptBuilder(tokenizer, tokens_per_frame=model.mllm.tokens_per_frame(), num_context=4)
    report = seg_attention(model, prompts, load_split(synth_root, SPLIT))
    assert all(0 <= v <= 1 for row in report.values() for v in row["pointer"].values())
    assert "twin" in report["look-alike"]["pointer"]  # every look-alike expression's object has its twin
    assert all({"referred", "background"} <= set(row["pointer"]) for row in report.values())
