"""lmctl-byte: a byte-level tokenizer for lmctl (``lmctl prepare --tokenizer byte``).

ByT5-style (Xue et al. 2022): the vocabulary is the special tokens the family needs followed by
the 256 byte values, so any Unicode text is represented losslessly, nothing is ever unknown, and
there is nothing to learn: "training" only builds the fixed vocabulary.
"""

__version__ = "0.1.0"
