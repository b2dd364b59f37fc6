"""Thin Typer command modules.  Each parses options and calls one library function.

Nothing here imports torch, transformers, datasets or accelerate at module level.
"""
