"""Management commands of the caching app."""
