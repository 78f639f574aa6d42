# syntax=docker/dockerfile:1
# The predcache image: gunicorn on $PORT as a non-root user, runtime dependencies only.
#   docker build -t predcache .
#   docker run -p 8080:8080 -e DJANGO_SECRET_KEY=... -e DATABASE_URL=... -e REDIS_URL=... predcache
# The same image runs any manage.py command; the migrations job runs command `python` with
# args `manage.py migrate --noinput`.
#
# Python 3.11 as in development: 3.13 turns on VERIFY_X509_STRICT, which rejects certificates
# some managed Redis services (Memorystore among them) still issue.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_STATIC_ROOT=/app/static \
    PORT=8080

WORKDIR /app

# Dependencies first, so a code change reuses this layer. Every pin ships a manylinux wheel,
# so the slim image needs no compiler. Dev and test tools (requirements-dev.txt) stay out.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

RUN groupadd --system --gid 10001 predcache \
 && useradd --system --uid 10001 --gid predcache --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin predcache

COPY manage.py ./
COPY predcache_site ./predcache_site
COPY caching ./caching
COPY templates ./templates

# Static files (admin, API docs) are collected into the image, read-only, and served by
# WhiteNoise. The secret key only lets the settings load: collectstatic signs nothing.
# var/ (local model files, SQLite when no DATABASE_URL is set) is the one writable place.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
 && python -m compileall -q manage.py predcache_site caching \
 && mkdir -p var/models \
 && chown -R predcache:predcache var

USER 10001:10001
EXPOSE 8080
# No HEALTHCHECK: Cloud Run ignores it and probes /healthz and /readyz itself.
CMD ["gunicorn", "--config", "predcache_site/gunicorn_conf.py", "predcache_site.wsgi"]
