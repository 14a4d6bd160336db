"""FLOPs and memory of GLUS, counted from the real module trees: `glus tools model cost`.

Nothing here is a typed-in figure. The model's own stage methods run on the meta device (shapes, no values,
no arithmetic) under `torch.utils.flop_counter.FlopCounterMode`, which adds up the FLOPs of every matrix
product, convolution and attention the modules dispatch; token counts come from the model's own
`PromptBuilder` (its template, its tokenizer).

Conventions
- One multiply-add is 2 FLOPs. Only matrix products (mm, bmm, addmm, baddbmm), convolutions and attention are
  counted (FlopCounterMode's set): norms, softmax, activations, interpolation and the losses are left out
  (each is O(elements), a few percent at most).
- Attention counts q k^T and attention x v over every (query, key) pair, masked or not: a causal LLM is counted
  at its full square (a causal FlashAttention kernel skips about half of the attention products).
- On the meta device `scaled_dot_product_attention` decomposes into two bmm, which FlopCounterMode counts; on
  the CPU it runs `_scaled_dot_product_flash_attention_for_cpu`, for which `counter()` adds torch's own SDPA
  formulas, so a model counts the same on either device.
- The LLM's attention mask is given as the 4-D mask transformers would prepare (batch, 1, queries, keys): its
  own 2-D mask handling reads mask values, which the meta device has not. With a KV cache the suffix runs the
  real `MultimodalLM.hidden_states(..., past_key_values=cache)`: its queries are the suffix, its keys prefix +
  suffix, exactly what the streaming engine runs.
- Image features are computed once per frame wherever the inference code does so (the engine, sparse mode's
  gaps); the faithful loop recomputes them per expression and frame, as it does.

Inference figures are per expression-frame, averaged over one forward pass over a video of `frames` frames
with `expressions` expressions, following each mode's loop in `glus.infer`:
- faithful (`FaithfulLoop`): per expression and frame, CLIP on the context + window frames, the whole prompt
  through the LLM, the SAM-2 image encoder, [SEG] projection, decoder + memory (batch 1);
- engine (`StreamingEngine`): per video CLIP on the context frames and the prompt prefix through the LLM (KV
  cache); per frame CLIP and the SAM-2 encoder once, the window's suffix for all expressions over the cached
  prefix, decoder + memory with the expressions as one batch;
- sparse K (`SparseEngine`): the engine on the anchors (positions 0, K, 2K, ... and the last frame), and per
  gap between two anchors the VOS path's image encoder once per frame (anchors included: the VOS encoder is
  its own model) and two propagations (from each anchor: its mask written as a conditioning frame, then the gap
  frames tracked), every expression in one batch;
- vos: the plain VOS path alone, per object-frame (a pass from a given mask; the start frame's encoder
  counted, its mask given).
The first frames of a pass have shorter windows and emptier memories than later ones; `steady` gives the cost of
a frame with a full window and a full memory. Decoder + memory passes are counted step by step with the real
memory state (what a step reads depends on what earlier steps wrote), once per model at batch 1 and 2 (see
`StageCosts._pass`: a step is affine in the batch and a shorter pass is a prefix of a longer one).

Text tokens: the model's tokenizer when there is one (a tiny recipe's; LISA's when its folder is present, or
`--tokenizer`); otherwise the tiny BPE tokenizer stands in and the report says so: image slots stay exact (they
come from the vision tower's patch count and the pooling), the text is spelt in more tokens than LLaMA's
(e.g. 844 tokens for the published prompt with 4 query frames, where LLaMA's tokenizer gives about 690).

Training figures are per training sample: one clip (`num_context` + `num_query` frames of one video) with
`expressions` expressions, as a GLUS micro-batch item. The real `GLUS.forward` runs on meta tensors and a
scalar made of its outputs is back-propagated: the backward FLOPs are counted too, not estimated: autograd
computes weight gradients only for trainable parameters and input gradients only where a trainable part lies
upstream, so a frozen image encoder under no_grad counts once, a frozen LLM with LoRA about 2x forward (input
gradients through every layer, weight gradients only for the adapters), a trained module about 3x. With the
recipe's gradient checkpointing the LLM's layers are recomputed in the backward (counted as run: torch's
non-reentrant checkpoint stops each recomputation once the saved tensors it needs are back, so a layer's last
products are not run again).

Memory: parameters by dtype (the recipe's: the 7B LLM in its `dtype`, SAM-2 float32), gradients of trainable
parameters, AdamW's two float32 states, and training activations measured as the tensors autograd saves for
the backward (`torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters excluded). Attention is
costed as a fused kernel (flash / memory-efficient: q, k, v, output and log-sum-exp kept), not as the meta
device's math path that would keep the (queries x keys) probabilities. Not included: the transient tensors of
the forward and the backward's own working memory (one checkpointed layer's recompute with checkpointing),
DeepSpeed's partitioning (ZeRO-2 splits gradients and optimiser states over the GPUs) and mixed-precision copies.

The package: `counting` (FlopCounterMode, meta helpers, attributing FLOPs to parts), `stages` (`StageCosts`:
each inference stage counted once per shape), `inference` (the modes' sums, `inference_costs`), `training`
(`training_costs`, `memory_costs`), `models` (`model_from_recipe`, `preset_model`) and `report` (`model_costs`,
`format_costs`, `describe`).
"""
from glus.tools.cost.counting import CPU_ATTENTION, as_meta, count_flops, counter
from glus.tools.cost.inference import GLUS_PARTS, VOS_PARTS, InferenceSettings, inference_costs, token_counts
from glus.tools.cost.models import model_from_recipe, preset_model
from glus.tools.cost.report import COLUMNS, describe, format_costs, model_costs
from glus.tools.cost.stages import DEFAULT_EXPRESSION, StageCosts, prompt_builder
from glus.tools.cost.training import TrainingSettings, memory_costs, training_costs

__all__ = ["COLUMNS", "CPU_ATTENTION", "DEFAULT_EXPRESSION", "GLUS_PARTS", "VOS_PARTS", "InferenceSettings",
           "StageCosts", "TrainingSettings", "as_meta", "count_flops", "counter", "describe", "format_costs",
           "inference_costs", "memory_costs", "model_costs", "model_from_recipe", "preset_model", "prompt_builder",
           "token_counts", "training_costs"]
