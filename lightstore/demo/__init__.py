"""The quick-start demo: ``python -m lightstore.demo`` (or ``tools/demo``).

It needs the ``demo`` extra (numpy, scipy, matplotlib): ``pip install lightstore[demo]``.
See `lightstore.demo.quickstart` for the pipeline and the walk-through.
"""
