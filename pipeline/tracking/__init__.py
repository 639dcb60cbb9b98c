"""Records of runs: MLflow tracking (parent and nested runs), the model registry, sweeps and the comparison of runs.
mlflow is imported lazily, inside the functions that need it."""
