"""The Pylightnix-compatible vocabulary, over the typed core."""
