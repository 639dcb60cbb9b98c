"""`python -m pipeline ...` is `edge-pipeline run ...` (pipeline/cli/run.py: the Hydra entry point)."""
from pipeline.cli.run import main

if __name__ == "__main__":
    main()
