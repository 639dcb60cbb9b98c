"""A stage declares what it is in its class statement (or as class attributes): both forms give the same class, and
a misspelt declaration is refused when the class is defined, not when a recipe first runs it."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from pipeline.stages import Stage, discover


@dataclass
class NoParams:
    pass


def test_keywords_and_attributes_declare_the_same_stage():
    class ByKeywords(Stage, type="k", config=NoParams, accepts=("onnx",), produces="onnx", inputs=1,
                     reads=("seed",), implements=("quantize", "onnx")):
        pass

    class ByAttributes(Stage):
        type, Config, accepts, produces, reads, implements = "a", NoParams, ("onnx",), "onnx", ("seed",), \
            ("quantize", "onnx")
        min_inputs = max_inputs = 1

    for name in ("Config", "accepts", "produces", "reads", "implements", "min_inputs", "max_inputs", "per_input"):
        assert getattr(ByKeywords, name) == getattr(ByAttributes, name), name


@pytest.mark.parametrize("inputs, expected", [(1, (1, 1)), ((0, 1), (0, 1)), ((1, None), (1, None))])
def test_inputs_is_a_count_or_a_range(inputs, expected):
    class S(Stage, type="s", config=NoParams, inputs=inputs):
        pass

    assert (S.min_inputs, S.max_inputs) == expected


def test_an_unknown_declaration_is_refused_at_class_definition():
    with pytest.raises(TypeError, match="unknown declaration.*produce\\b.*a stage declares config, inputs and"):
        class Typo(Stage, type="t", config=NoParams, produce="onnx"):
            pass


def test_a_subclass_inherits_and_overrides_declarations():
    registry = discover()
    export, quantize = registry["export_tflite"], registry["quantize_tflite"]
    assert (quantize.produces, quantize.min_inputs, quantize.max_inputs) == ("tflite", 1, 1)  # inherited
    assert quantize.accepts == ("tflite",) and export.accepts != quantize.accepts
