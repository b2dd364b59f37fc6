"""Orchestration: prepare, train, evaluate, generate, export, runs, quickstart.

Workflows call family methods and never name a family; progress and display arrive as callbacks
(the terminal belongs to :mod:`lmctl.cli`).
"""
