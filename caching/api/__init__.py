"""The HTTP interface: predict route, health checks, authentication and the JSON error shape."""
