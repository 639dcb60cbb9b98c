"""Declarative pipeline orchestrator for edge inference optimization.

The core (plan, runner, cache, tracking, report) imports no ML framework; stages and runtimes import theirs lazily.
"""
__version__ = "0.1.0"
