"""Plain-Python heart of predcache: canonical keys, value codec, Redis store, read-through."""
