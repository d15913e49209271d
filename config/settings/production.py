"""Settings for a deployment. Secrets and services have no defaults here: a missing one stops
start-up with a message that names it (`config.env.env_required`).

Required: DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, DATABASE_URL (PostgreSQL), CELERY_BROKER_URL
and EXPORT_PSEUDONYM_KEY. TLS ends at a reverse proxy in front of gunicorn, which must set
X-Forwarded-Proto (and strip it from clients).
"""

import dj_database_url

from config.env import env_int, env_required, env_str
from config.logs import logging_config
from config.settings.base import *  # noqa: F403
from config.settings.base import LOG_LEVEL, MIDDLEWARE

SECRET_KEY = env_required("DJANGO_SECRET_KEY")
EXPORT_PSEUDONYM_KEY = env_required("EXPORT_PSEUDONYM_KEY")
ALLOWED_HOSTS = [host.strip() for host in env_required("DJANGO_ALLOWED_HOSTS").split(",")]
DEBUG = False

DATABASES = {
    "default": dj_database_url.parse(
        env_required("DATABASE_URL"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
# A deployment runs tasks on workers: training must never run inside a web request.
CELERY_BROKER_URL = env_required("CELERY_BROKER_URL")
CELERY_TASK_ALWAYS_EAGER = False

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = True
# Probes come over plain HTTP from inside the cluster (docker-compose.yml's health checks).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# The ranking page reads its CSRF token from the page, never from the cookie.
CSRF_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
# ".example.com" in ALLOWED_HOSTS means every subdomain; the trusted origin says it as "*.".
CSRF_TRUSTED_ORIGINS = [
    f"https://*{host}" if host.startswith(".") else f"https://{host}"
    for host in ALLOWED_HOSTS
    if host != "*"
]

# gunicorn serves the static files itself through WhiteNoise (compressed, with hashed names
# cached forever); `collectstatic` runs when the image is built.
MIDDLEWARE = [
    MIDDLEWARE[0],  # SecurityMiddleware first
    "whitenoise.middleware.WhiteNoiseMiddleware",
    *MIDDLEWARE[1:],
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGGING = logging_config(format=env_str("LOG_FORMAT") or "json", level=LOG_LEVEL)
