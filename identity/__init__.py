"""Identity: normalisation and validation, the identity graph, fuzzy matching, merges."""
