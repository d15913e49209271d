"""Settings for a deployment. Secrets have no defaults here: a missing one stops start-up."""

from config.env import env_int, env_required
from config.settings.base import *  # noqa: F403

SECRET_KEY = env_required("DJANGO_SECRET_KEY")
EXPORT_PSEUDONYM_KEY = env_required("EXPORT_PSEUDONYM_KEY")
DEBUG = False

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
