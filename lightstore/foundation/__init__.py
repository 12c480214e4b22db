"""The foundation: references, configs, hashing, errors, files, locks, logs, metrics, times.

Everything else in lightstore is built on these modules; they import nothing
from lightstore outside this package.
"""
