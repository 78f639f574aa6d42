"""The predcache Django app: models, services, API and operator tooling around caching.core."""
