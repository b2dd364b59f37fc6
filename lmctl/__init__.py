"""lmctl: from raw text to a trained, evaluated, sampled language model.

The command line (``lmctl prepare / train / eval / generate / plugins``) is a thin layer over
importable functions: :func:`lmctl.prepare.prepare`, :func:`lmctl.train.train`,
:func:`lmctl.evaluate.evaluate`, :func:`lmctl.generate.generate`.
"""

__version__ = "0.1.0"
