"""GraphQL schema assembly, per-request context and DataLoaders."""
