"""lmctl: from raw text to a trained, evaluated, sampled language model.

The command line (``lmctl prepare / train / eval / generate / plugins``) is a thin layer over
importable functions: :func:`lmctl.workflows.prepare.prepare`, :func:`lmctl.workflows.train.trainer.train`,
:func:`lmctl.workflows.evaluate.evaluate`, :func:`lmctl.workflows.generate.generate`.
"""

__version__ = "0.2.0"
