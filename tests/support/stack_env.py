"""The Django security settings the Pulumi stack gives every container (infra/predcache_infra/app.py).

Plain data, read by both test suites: tests/infra checks the stack sets exactly these, and
tests/test_deploy_settings.py runs Django's deployment checks with them.
"""

STACK_SECURITY_ENV = {
    "DJANGO_SECURE_PROXY_SSL_HEADER": "true",  # Cloud Run terminates TLS and says so in X-Forwarded-Proto
    "DJANGO_SECURE_SSL_REDIRECT": "true",
    "DJANGO_SECURE_COOKIES": "true",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "DJANGO_SECURE_HSTS_PRELOAD": "true",
}
