"""The quick-start demo: ``python -m lightstore.demo`` (or ``tools/demo``).

It needs the ``demo`` extra (numpy, scipy, matplotlib): ``pip install lightstore[demo]``.
See `lightstore.demo.pipeline` for the pipeline and `lightstore.demo.quickstart` for the
walk-through.
"""
