"""Conversion library: plain functions that turn a model into a deployable artifact (ExecuTorch `.pte`, OpenVINO IR).

Stages are thin adapters over these functions; the measured choice (select) calls the same builders. Every module
imports its framework inside the functions that need it, so importing this package costs nothing.
"""
