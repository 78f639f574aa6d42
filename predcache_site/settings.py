"""The one settings module: everything that differs between machines comes from the environment."""

from __future__ import annotations

import os
import re
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from predcache_site.broker import redis_broker_tls, redis_url_with_password
from predcache_site.metrics_dir import metrics_dir

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # optional; real environment variables win

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("set DJANGO_SECRET_KEY (or DJANGO_DEBUG=true for local development)")
    SECRET_KEY = "insecure-development-key-do-not-deploy"
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS. Off by default so `make demo` works on plain http; turn on behind TLS.
if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=False):
    # Only behind a proxy that sets X-Forwarded-Proto itself (Cloud Run, a load balancer).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # probes speak plain http
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "caching",
]

MIDDLEWARE = [
    "caching.api.health.ProbeMiddleware",  # probes come by IP: answer them before host checks
    # The predict routes: behind the security middleware below alone (caching/api/lean.py).
    "caching.api.lean.LeanRoutes",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "predcache_site.urls"
WSGI_APPLICATION = "predcache_site.wsgi.application"
ASGI_APPLICATION = "predcache_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'predcache.sqlite3'}"),
}
# Cloud SQL through its unix socket: postgres://USER@/DB?host=/cloudsql/PROJECT:REGION:INSTANCE.
# django-environ leaves the socket directory in OPTIONS; HOST is where Django reports it.
if not DATABASES["default"].get("HOST") and "host" in DATABASES["default"].get("OPTIONS", {}):
    DATABASES["default"]["HOST"] = DATABASES["default"]["OPTIONS"].pop("host")
# The password as a secret of its own (Cloud Run injects secrets as env values), so the URL holds none.
if database_password := env.str("DATABASE_PASSWORD", default=""):
    DATABASES["default"]["PASSWORD"] = database_password
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(exist_ok=True)
    # The web server, the worker and beat share the file: with WAL, readers and a writer do not
    # block each other (without it, a transaction that read and then writes fails at once while
    # another process commits), and writers wait up to 20 s for each other.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        **DATABASES["default"].get("OPTIONS", {}),
    }
    # A file, not memory, so that server processes started by the tests see the test database;
    # one per test run, so two runs on one checkout do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-predcache-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

# --- the prediction cache ---------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Memorystore: REDIS_URL=rediss://HOST:6378/0, with the AUTH string and the server CA as secrets of
# their own so the URL holds neither. A password given here wins over one in the URL.
PREDCACHE_REDIS_PASSWORD = env.str("REDIS_AUTH", default="") or env.str("REDIS_PASSWORD", default="")
# The CA a rediss:// server's certificate must chain to: the PEM text itself, or a PEM file's path.
PREDCACHE_REDIS_CA_CERT = env.str("REDIS_CA_CERT", default="", multiline=True).strip()
if PREDCACHE_REDIS_CA_CERT:
    if not REDIS_URL.startswith("rediss://"):
        raise ImproperlyConfigured("REDIS_CA_CERT needs a rediss:// REDIS_URL")
    if "-----BEGIN" not in PREDCACHE_REDIS_CA_CERT and not Path(PREDCACHE_REDIS_CA_CERT).is_file():
        raise ImproperlyConfigured("REDIS_CA_CERT is neither PEM text nor the path of a file")
# With a pinned CA, checking the host name is off by default: a Memorystore CA belongs to one
# instance, so the chain alone proves which server answers, while its server certificates are
# reported to carry the IP only as the common name, which Python's IP check ignores. Against the
# system's CAs (where any public certificate chains) the check stays on.
PREDCACHE_REDIS_TLS_CHECK_HOSTNAME = env.bool(
    "PREDCACHE_REDIS_TLS_CHECK_HOSTNAME", default=not PREDCACHE_REDIS_CA_CERT
)
# Redis Cluster (Memorystore for Redis Cluster): REDIS_URL names any node (its discovery endpoint).
PREDCACHE_REDIS_CLUSTER = env.bool("REDIS_CLUSTER", default=False)
# IAM authentication (Memorystore for Redis Cluster): each new connection sends user "default" and
# a fresh OAuth access token of the process's Google credentials instead of a password.
PREDCACHE_REDIS_IAM_AUTH = env.bool("REDIS_IAM_AUTH", default=False)
if PREDCACHE_REDIS_IAM_AUTH and PREDCACHE_REDIS_PASSWORD:
    raise ImproperlyConfigured("REDIS_IAM_AUTH sends IAM tokens: set no REDIS_PASSWORD or REDIS_AUTH with it")
PREDCACHE_KEY_PREFIX = env.str("PREDCACHE_KEY_PREFIX", default="pc:")
# Names this installation in every key (default: the id the migrations stored in the database), so
# installations sharing a Redis never share entries, purges or stats. Set it apart for a database
# cloned from another installation's.
PREDCACHE_INSTALLATION_ID = env.str("PREDCACHE_INSTALLATION_ID", default="")
if PREDCACHE_INSTALLATION_ID and not re.fullmatch(r"[0-9a-z]{1,32}", PREDCACHE_INSTALLATION_ID):
    raise ImproperlyConfigured("PREDCACHE_INSTALLATION_ID must be 1-32 lowercase letters and digits")
# Integrity of stored values: set, every value written carries an HMAC-SHA256 tag under this key,
# and a value that does not verify (forged, moved, untagged) is a miss, counted and logged. The old
# key is accepted for reading only, while values written under it expire (rotation).
PREDCACHE_VALUE_HMAC_KEY = env.str("PREDCACHE_VALUE_HMAC_KEY", default="")
PREDCACHE_VALUE_HMAC_OLD_KEY = env.str("PREDCACHE_VALUE_HMAC_OLD_KEY", default="")
if PREDCACHE_VALUE_HMAC_OLD_KEY and not PREDCACHE_VALUE_HMAC_KEY:
    raise ImproperlyConfigured("PREDCACHE_VALUE_HMAC_OLD_KEY needs PREDCACHE_VALUE_HMAC_KEY (the new key)")
for _name, _key in (
    ("PREDCACHE_VALUE_HMAC_KEY", PREDCACHE_VALUE_HMAC_KEY),
    ("PREDCACHE_VALUE_HMAC_OLD_KEY", PREDCACHE_VALUE_HMAC_OLD_KEY),
):
    if 0 < len(_key) < 32:
        raise ImproperlyConfigured(f"{_name} must be at least 32 characters (a random string)")
# Short timeouts: Redis is an accelerator, and a slow one must not slow predictions down.
PREDCACHE_REDIS_SOCKET_TIMEOUT = env.float("PREDCACHE_REDIS_SOCKET_TIMEOUT", default=0.25)
PREDCACHE_REDIS_CONNECT_TIMEOUT = env.float("PREDCACHE_REDIS_CONNECT_TIMEOUT", default=0.25)
# After this many consecutive Redis errors a process skips Redis for the reset time, then probes.
PREDCACHE_REDIS_BREAKER_FAILURES = env.int("PREDCACHE_REDIS_BREAKER_FAILURES", default=3)
PREDCACHE_REDIS_BREAKER_RESET_SECONDS = env.float("PREDCACHE_REDIS_BREAKER_RESET_SECONDS", default=5.0)
# After this many consecutive failures of a model, its calls fail fast (or serve stale) for a while.
PREDCACHE_BACKEND_BREAKER_FAILURES = env.int("PREDCACHE_BACKEND_BREAKER_FAILURES", default=5)
PREDCACHE_BACKEND_BREAKER_RESET_SECONDS = env.float("PREDCACHE_BACKEND_BREAKER_RESET_SECONDS", default=10.0)
# How long a request waits for another process computing the same instance before computing it too.
PREDCACHE_SINGLE_FLIGHT_WAIT_SECONDS = env.float("PREDCACHE_SINGLE_FLIGHT_WAIT_SECONDS", default=5.0)
# After a model or version purge, free the unreachable entries' memory in a background thread.
PREDCACHE_RECLAIM_AFTER_PURGE = env.bool("PREDCACHE_RECLAIM_AFTER_PURGE", default=True)
PREDCACHE_MODEL_DIR = Path(env.str("PREDCACHE_MODEL_DIR", default=str(VAR_DIR / "models")))
PREDCACHE_MAX_BODY_BYTES = env.int("PREDCACHE_MAX_BODY_BYTES", default=4 * 1024 * 1024)
PREDCACHE_MAX_INSTANCES = env.int("PREDCACHE_MAX_INSTANCES", default=1000)
PREDCACHE_MAX_DEPTH = env.int("PREDCACHE_MAX_DEPTH", default=32)
# How long a web process trusts its in-memory copy of a model's settings and of a verified key.
PREDCACHE_CONFIG_CACHE_SECONDS = env.float("PREDCACHE_CONFIG_CACHE_SECONDS", default=1.0)
PREDCACHE_API_KEY_CACHE_SECONDS = env.float("PREDCACHE_API_KEY_CACHE_SECONDS", default=5.0)
# How often a process writes a key's last use to the database (0: never).
PREDCACHE_API_KEY_LAST_USED_SECONDS = env.float("PREDCACHE_API_KEY_LAST_USED_SECONDS", default=60.0)
PREDCACHE_STATS_FLUSH_SECONDS = env.float("PREDCACHE_STATS_FLUSH_SECONDS", default=1.0)
# The in-process tier of models with l1 on (caching/core/l1.py): per process, at most this many
# entries and bytes (values, key names and bookkeeping), least recently used out. Its tracking
# connection is PINGed this often; three missed heartbeats turn the tier off until it answers.
PREDCACHE_L1_MAX_ENTRIES = env.int("PREDCACHE_L1_MAX_ENTRIES", default=100_000)
PREDCACHE_L1_MAX_BYTES = env.int("PREDCACHE_L1_MAX_BYTES", default=64 * 1024 * 1024)
PREDCACHE_L1_HEARTBEAT_SECONDS = env.float("PREDCACHE_L1_HEARTBEAT_SECONDS", default=1.0)
if PREDCACHE_L1_HEARTBEAT_SECONDS <= 0:
    raise ImproperlyConfigured("PREDCACHE_L1_HEARTBEAT_SECONDS must be positive")
# The dashboard: per-minute counters kept this long (0: none kept), and a model's entry count and
# memory re-measured when its page is opened and the last measurement is older than this.
PREDCACHE_DASHBOARD_RETENTION_HOURS = env.float("PREDCACHE_DASHBOARD_RETENTION_HOURS", default=24.0)
PREDCACHE_USAGE_MAX_AGE_SECONDS = env.int("PREDCACHE_USAGE_MAX_AGE_SECONDS", default=300)
# Refresh-ahead's hot set: 1 in this many fresh hits is sampled (0: off), counted in process and
# flushed with the stats; per model Redis keeps the hottest PREDCACHE_HOT_SET_SIZE, their counts
# halving every PREDCACHE_HOT_HALF_LIFE_SECONDS.
PREDCACHE_HOT_SAMPLE_RATE = env.int("PREDCACHE_HOT_SAMPLE_RATE", default=10)
PREDCACHE_HOT_SET_SIZE = env.int("PREDCACHE_HOT_SET_SIZE", default=1000)
PREDCACHE_HOT_HALF_LIFE_SECONDS = env.float("PREDCACHE_HOT_HALF_LIFE_SECONDS", default=600.0)
DATA_UPLOAD_MAX_MEMORY_SIZE = PREDCACHE_MAX_BODY_BYTES

# --- /metrics (Prometheus) -----------------------------------------------------------------------
# Every process of this host (gunicorn workers, Celery workers) keeps its counters in files here and
# /metrics adds them up; default var/prometheus. Set before prometheus_client is imported anywhere.
PROMETHEUS_MULTIPROC_DIR = metrics_dir()
# Unset: /metrics answers anyone who reaches it (scraped from inside the network). Set: only a
# request with "Authorization: Bearer <token>".
PREDCACHE_METRICS_TOKEN = env.str("PREDCACHE_METRICS_TOKEN", default="")
# Each process tallies client requests in memory and writes them to its file this often (a hit
# then costs no file write); /metrics may lag a process's requests by up to this long.
PREDCACHE_METRICS_PUBLISH_SECONDS = env.float("PREDCACHE_METRICS_PUBLISH_SECONDS", default=1.0)
if PREDCACHE_METRICS_PUBLISH_SECONDS <= 0:
    raise ImproperlyConfigured("PREDCACHE_METRICS_PUBLISH_SECONDS must be positive")

# --- Celery: warming, refresh-ahead, scheduled purges (predcache_site/celery.py) ------------------
# The broker: the cache's Redis unless set apart (Redis with noeviction, or RabbitMQ amqp://...).
# Given apart, the cache's AUTH string and CA are not passed on: put the broker's password in its
# URL, and a rediss:// broker's CA (PEM text or a file's path) in CELERY_BROKER_CA_CERT.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_BROKER_CA_CERT = env.str("CELERY_BROKER_CA_CERT", default="", multiline=True).strip()
if CELERY_BROKER_CA_CERT:
    if not CELERY_BROKER_URL.startswith("rediss://"):
        raise ImproperlyConfigured("CELERY_BROKER_CA_CERT needs a rediss:// CELERY_BROKER_URL")
    # As for the cache's Redis: a Memorystore CA is the instance's own, so the host name is not checked.
    CELERY_BROKER_USE_SSL = redis_broker_tls(
        CELERY_BROKER_CA_CERT, check_hostname=False, var_dir=VAR_DIR, file_name="broker-ca.pem"
    )
if not CELERY_BROKER_URL and PREDCACHE_REDIS_CLUSTER:
    raise ImproperlyConfigured(
        "a Redis Cluster cannot be the Celery broker: set CELERY_BROKER_URL (a Redis of its own, or RabbitMQ)"
    )
if not CELERY_BROKER_URL and PREDCACHE_REDIS_IAM_AUTH:
    raise ImproperlyConfigured(
        "the Celery broker cannot log in with IAM tokens: set CELERY_BROKER_URL (a Redis of its own, "
        "or RabbitMQ)"
    )
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = REDIS_URL
    if PREDCACHE_REDIS_PASSWORD:
        CELERY_BROKER_URL = redis_url_with_password(REDIS_URL, PREDCACHE_REDIS_PASSWORD)
    if CELERY_BROKER_URL.startswith("rediss://"):
        CELERY_BROKER_USE_SSL = redis_broker_tls(
            PREDCACHE_REDIS_CA_CERT, check_hostname=PREDCACHE_REDIS_TLS_CHECK_HOSTNAME, var_dir=VAR_DIR
        )
CELERY_TASK_SERIALIZER = CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]  # never pickle: a message cannot run code in a worker
CELERY_TASK_ACKS_LATE = True  # a task whose worker dies is delivered again...
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # ...also when the process was killed, not only on errors
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a long warm never holds other tasks back
CELERY_TASK_IGNORE_RESULT = True  # runs are recorded in the database (WarmRun), not in a result store
# The queue: "predcache-<installation id>" unless set, so installations sharing a broker never run
# each other's tasks (a task names a model by its database id). Redis brokers: a key prefix too.
PREDCACHE_CELERY_QUEUE = env.str("PREDCACHE_CELERY_QUEUE", default="")
PREDCACHE_CELERY_KEY_PREFIX = env.str("PREDCACHE_CELERY_KEY_PREFIX", default="")
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The longest task (a warm) is stopped after this; the broker redelivers an unacknowledged task
# only after the visibility timeout, which must be longer, or a long warm would run twice at once.
PREDCACHE_TASK_TIME_LIMIT_SECONDS = env.int("PREDCACHE_TASK_TIME_LIMIT_SECONDS", default=3600)
CELERY_TASK_TIME_LIMIT = PREDCACHE_TASK_TIME_LIMIT_SECONDS
CELERY_TASK_SOFT_TIME_LIMIT = max(1, PREDCACHE_TASK_TIME_LIMIT_SECONDS - 60)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 2 * PREDCACHE_TASK_TIME_LIMIT_SECONDS}
if PREDCACHE_CELERY_KEY_PREFIX:
    CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = PREDCACHE_CELERY_KEY_PREFIX
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Warming computes the instances that are missing or expire within this fraction of the TTL (the
# warm's RFC 9111 min-fresh; a set warmed on an interval also renews what expires before its next
# run). A warm set or file holds at most PREDCACHE_WARM_MAX_INSTANCES instances.
PREDCACHE_WARM_MIN_FRESH_FRACTION = env.float("PREDCACHE_WARM_MIN_FRESH_FRACTION", default=0.25)
PREDCACHE_WARM_MAX_INSTANCES = env.int("PREDCACHE_WARM_MAX_INSTANCES", default=100_000)
# Where background work runs: Celery workers (true), or threads in each web process (false: a
# deployment with no worker, and the in-process tests).
PREDCACHE_BACKGROUND_IN_WORKERS = env.bool("PREDCACHE_BACKGROUND_IN_WORKERS", default=True)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["caching.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["caching.api.authentication.HasApiKey"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "caching.api.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "caching.api.schema.ApiSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "predcache API",
    "DESCRIPTION": "A read-through prediction cache in front of ML model servers.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
