"""What families are built from: loss functions, masking, scoring windows and sums.

Above :mod:`lmctl.core`; knows no particular family.
"""
