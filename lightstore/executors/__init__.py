"""Drivers that run the engine's build tasks elsewhere than in the calling process.

`lightstore.executors.dask` builds on a Dask distributed cluster
(``pip install 'lightstore[dask]'``); it is imported only when asked for.
"""
