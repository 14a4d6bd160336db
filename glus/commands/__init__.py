"""The `glus` subcommands, one module per topic; glus.cli builds the parser from their `add_parsers(sub)` and
places the grouped ones (`glus study ...`, `glus tools ...`).

- common: argument groups several subcommands share (model_args, split_args, shard_arg, prediction_args) and
  load_for_inference
- data: data synth, data check, data index
- train: fit; study compare-runs, study heldout
- infer: predict, pseudolabel, keyframes; study keyframes-report
- evaluate: validate, evaluate, submit, visualize; study ablation-table
- vos: vos, vos-eval, rds importance; study vos-table
- tools: study naming-probe, attention-probe, motion-probe; tools bench, gpu-check, model summary, model cost

Each handler imports its heavy dependencies when it runs, so that `glus --help` stays fast.
"""
