"""Golden values: the embedded default's model at initialisation (the recipe's builder: the committed segmenter and
motion stages, a fixed seed) on fixed inputs, against numbers stored in tests/golden/tiny_glus.json. The other tests
compare two paths of the code with each other (the engine with the faithful loop, a pass from a key frame with
the plain pass); a change that moves both alike passes them and fails here. A change meant to move these numbers
(or a rebuilt stage) rewrites the file: `.venv/bin/python -m tests.test_golden`, and says so in its commit."""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "tiny_glus.json"
STAGES = [ROOT / "checkpoints" / "synthetic" / name / "heads.safetensors" for name in ("segmenter", "motion")]
TEXTS = ["the red circle", "the object moving left"]


def stage_hashes() -> dict[str, str]:
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in STAGES}


def figures() -> dict[str, list]:
    """The numbers: [SEG] prompts and mask logits of the training forward on a synthetic clip batch, and the
    low-resolution mask logits of the streaming engine and the faithful loop on a generated video."""
    from glus.data.generated import GeneratedVideo
    from glus.infer.engine import FaithfulLoop, StreamingEngine
    from glus.model.build.tiny import TinyGLUSBuilder
    from tests.model_helpers import synthetic_batch

    torch.set_num_threads(1)
    recipe = yaml.safe_load((ROOT / "recipes" / "synthetic.yaml").read_text())
    model, tokenizer = TinyGLUSBuilder(**recipe["model"]["init_args"]["builder"]["init_args"]).build()
    model.eval()
    with torch.no_grad():
        out = model(synthetic_batch(model, tokenizer))
    result = {"seg_prompt": out.seg_embeddings[0, 0, :6].tolist(),
              "seg_prompt_norms": out.seg_embeddings.norm(dim=-1).flatten().tolist(),
              "mask_logit_means": out.mask_logits.mean(dim=(-1, -2)).flatten().tolist(),
              "mask_logits_at_10_20": out.mask_logits[0, :, 10, 20].tolist()}
    video = GeneratedVideo(6, 160, 96, seed=3)
    for name, cls in (("engine", StreamingEngine), ("faithful", FaithfulLoop)):
        frames = {}
        for r in cls(model, tokenizer).run(video, TEXTS):
            for row, e in enumerate(r.expressions):
                frames.setdefault(e, []).append([r.logits[row].mean().item(), r.logits[row, 16, 16].item()])
        result[name] = [frames[e] for e in sorted(frames)]
    return result


@pytest.fixture(scope="module")
def golden():
    stored = json.loads(GOLDEN.read_text())
    if stored["stages"] != stage_hashes():
        pytest.fail(f"the committed stages changed since {GOLDEN.name} was written ({stored['stages']} then, "
                    f"{stage_hashes()} now): rewrite it with `.venv/bin/python -m tests.test_golden`")
    return stored


@pytest.fixture(scope="module")
def now():
    return figures()


@pytest.mark.parametrize("name", ["seg_prompt", "seg_prompt_norms", "mask_logit_means", "mask_logits_at_10_20",
                                  "engine", "faithful"])
def test_the_model_gives_the_stored_numbers(golden, now, name):
    np.testing.assert_allclose(np.asarray(now[name]), np.asarray(golden["figures"][name]), rtol=1e-3, atol=1e-3,
                               err_msg=f"{name} moved")


def test_the_numbers_are_not_flat(golden):
    # a golden file of constants would pass almost any change: the stored figures vary across frames and texts
    engine = np.asarray(golden["figures"]["engine"])
    assert np.ptp(engine[..., 1]) > 5 and np.ptp(golden["figures"]["mask_logit_means"]) > 1
    assert not np.allclose(engine[0], engine[1])


if __name__ == "__main__":  # rewrite the stored numbers
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"stages": stage_hashes(), "figures": figures()}, indent=1) + "\n")
    print(f"wrote {GOLDEN}", file=sys.stderr)
