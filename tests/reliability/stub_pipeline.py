"""`python tests/reliability/stub_pipeline.py recipe=stub_chain ...`: the real command line (pipeline.cli.run) with the
reliability stub stages found as a plug-in (plugin/ holds a distribution's metadata whose `edge_pipeline.stages` entry
point names reliability_stubs) and tests/reliability/conf on Hydra's search path (it holds the stub recipes)."""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PATHS = [str(HERE / "plugin"), str(HERE), str(ROOT)]  # the plug-in's metadata, its module, this checkout's `pipeline`
sys.path[:0] = PATHS
os.environ["PYTHONPATH"] = os.pathsep.join([*PATHS, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)

from pipeline.cli.run import main  # noqa: E402

if __name__ == "__main__":
    sys.argv.append(f"hydra.searchpath=[file://{HERE / 'conf'}]")
    main()
