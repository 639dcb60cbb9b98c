"""The engine: plan a recipe into a DAG, derive each task's key, run or reuse it, announce events. Imports no ML
framework (tests/test_core_imports.py)."""
