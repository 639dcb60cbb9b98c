"""`edge-pipeline benchmark [key=value ...]`: one model in every format and precision this host can build and run,
timed side by side (the recipe `benchmark`: a benchmark_formats stage; any run override works here too).

    edge-pipeline benchmark model=mobilenet_v2 model.input_size=64      a zoo model, random weights (top-1 n/a)
    edge-pipeline benchmark path=model.onnx                             your file, through an import_model stage
    edge-pipeline benchmark model=resnet18 stages.formats.candidates=[ort_fp32,ort_defaults,openvino_int8]

The table is printed after the run, written as reports/formats/benchmark_formats.csv and .json in the run folder,
and shown on the MLflow run card.
"""
from __future__ import annotations

import sys

KEYS = {
    "model": "a zoo model (mobilenet_v2, mobilenet_v3_small, resnet18, ...), built with random weights",
    "model.input_size": "square input resolution in pixels (the recipe's default: 64)",
    "path": "your model file instead (.onnx, .pt2, TorchScript ...): imported by an import_model stage",
    "stages.formats.candidates": "which formats and precisions, e.g. [ort_fp32,litert_int8] "
                                 "(edge-pipeline stages type=benchmark_formats lists them)",
    "stages.formats.iterations": "timed runs of each model (default 50)",
    "device": "whose thread count to time with (default host: all cores)",
    "...": "any other override of a run (data=, paths.outputs=, tracking=none ...)",
}


def overrides(argv: list[str]) -> list[str]:
    """The run's overrides: recipe=benchmark first, `path=FILE` turned into an import_model stage feeding the table."""
    out = ["recipe=benchmark"]
    for a in argv:
        key, _, value = a.partition("=")
        if key == "path":
            out += ["stages.import.type=import_model", f"stages.import.path={value}", "stages.formats.inputs=[import]"]
        else:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli.launch import run_hydra
    from pipeline.core import arguments as cli_args

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(cli_args.help_text("edge-pipeline benchmark", __doc__.strip().split("\n\n")[0], KEYS))
        return 0
    if any(a.startswith("recipe=") for a in argv):
        print("error: benchmark runs the recipe `benchmark`; to run another recipe: edge-pipeline run recipe=NAME",
              file=sys.stderr)
        return 2
    return run_hydra(overrides(argv))


if __name__ == "__main__":
    sys.exit(main())
