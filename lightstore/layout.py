"""Names of the store's files and the defaults every layer shares.

Kept apart from `store` so that the modules built on a store (maintenance,
exchange, queries) and the ones below it (trash recovery) name the same
files without importing each other.
"""

from __future__ import annotations

#: The catalogue file in the store root.
CATALOGUE_FILE = "catalogue.sqlite"
#: A derivation folder's config file.
CONFIG_FILE = "config.json"
#: How long gc and verify wait for running realizations before giving up.
DEFAULT_GC_TIMEOUT_S = 60.0
