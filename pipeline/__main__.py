"""`python -m pipeline ...` is `edge-pipeline run ...` (pipeline/cli/run.py: the Hydra entry point)."""
if __name__ == "__main__":  # (not when a launcher's worker imports this module: its signals are its own)
    from pipeline.core import interrupts

    interrupts.while_starting()  # importing Hydra and the frameworks takes seconds

    from pipeline.cli.run import main

    main()
