"""The optimizer: the fastest model for a device that keeps its accuracy, found by a cost-aware search over depth and
channel pruning, with distillation, QAT and every int8 runtime the device deploys (docs/optimize.md).

engine    optimize(): the whole flow, called by the `optimize` stage (pipeline/stages/optimize.py)
search    Optuna NSGA-II with constraints, the stop rule, the finalists
trials    one trial's cached steps: prune + short distillation, latency proxy; a finalist's full distillation, QAT
surgery   depth and channel edits (torch-pruning), the sensitivity analysis, per-group allocation
recover   distillation and quantization-aware distillation
deploy    every int8 form the device runs, built with pipeline.library.candidates; the peers' defaults
timing    latency proxies, side-by-side measurement, on-device measurement, estimates and their intervals
choose    deploy, time and judge the finalists; outcome: lineage, findings, front table and picture
store     every step cached in the project's content-addressed store (pipeline.core.cache)
Heavy frameworks are imported inside functions; importing this package is cheap.
"""
