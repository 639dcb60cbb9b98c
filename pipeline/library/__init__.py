"""The ML library under the stages: training loops, calibration images, model signatures and input preparation,
per-layer diagnosis, parity metrics, timing statistics, thread choice. Heavy imports stay inside functions."""
