"""`python -m pipeline.cli` is `edge-pipeline`."""
import sys

from pipeline.cli import main

sys.exit(main())
