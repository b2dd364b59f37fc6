"""The bottom layer: hub access, devices and precision, the prepared-data format, checkpoint
files, the cache location, atomic writes and silencing libraries.

Imports nothing of lmctl but :mod:`lmctl.errors`.
"""
