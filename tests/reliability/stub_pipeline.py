"""`python tests/reliability/stub_pipeline.py recipe=stub_chain ...`: the real command line (pipeline.__main__) with the
reliability stub stages registered and tests/reliability/conf on Hydra's search path (it holds the stub recipes)."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))  # this checkout's `pipeline`, whatever is installed

import reliability_stubs  # noqa: E402,F401  (registers the stub stage types)

from pipeline.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.argv.append(f"hydra.searchpath=[file://{HERE / 'conf'}]")
    main()
