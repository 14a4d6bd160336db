"""The `glus` subcommands, one module per topic; glus.cli builds the parser from their `add_parsers(sub)`.

- common: argument groups several subcommands share (model_args, split_args, shard_arg, prediction_args) and
  load_for_inference
- data: data synth, data check, data index
- train: fit, runs compare
- infer: predict, pseudolabel, keyframes, keyframes-report
- evaluate: validate, evaluate, submit, visualize, ablation-table
- vos: vos, vos-eval, vos-table, rds importance
- tools: bench, gpu-check, model summary, model cost, motion-probe

Each handler imports its heavy dependencies when it runs, so that `glus --help` stays fast.
"""
