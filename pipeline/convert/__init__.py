"""Conversion and quantization: plain functions from one model file to another, called by the stages (which only
validate parameters and wrap results). Each module imports its framework inside its functions."""
