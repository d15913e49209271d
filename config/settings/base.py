"""Settings shared by every environment. Everything configurable is read here, through
`config.env`, and nowhere else.

Embedded defaults need no configuration at all: SQLite in the project folder and Celery
tasks run in-process. `DATABASE_URL` switches to PostgreSQL, `CELERY_BROKER_URL` to Redis.
"""

from pathlib import Path

import dj_database_url

from config.env import env_bool, env_int, env_json, env_list, env_str
from config.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = env_str("DJANGO_SECRET_KEY") or "insecure-development-key-do-not-deploy"
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_celery_beat",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "annotation",
    "training",
    "demo",
]

MIDDLEWARE = [
    # First: refuses oversized bodies and NUL query strings before anything reads them, and
    # answers a lost database connection with 503 (config/api_errors.py).
    "config.api_errors.HardeningMiddleware",
    "config.login_throttle.LoginThrottleMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Argon2 (memory-hard) for new passwords; PBKDF2 still verifies older hashes, which Django
# re-hashes with Argon2 at the user's next login.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / "staticfiles")

# How long an annotator holds a prompt before it goes back to the pool.
ANNOTATION_LEASE_MINUTES = env_int("RANKLOOP_LEASE_MINUTES", 30)
# Gold prompts (annotation/quality.py): an annotator's mean Kendall tau against the reference
# rankings, judged once they have ranked this many gold prompts, warns them below one
# threshold and pauses their work below the other until an admin resumes them.
GOLD_MIN_RANKINGS = env_int("RANKLOOP_GOLD_MIN_RANKINGS", 3)
GOLD_WARN_BELOW = float(env_str("RANKLOOP_GOLD_WARN_BELOW") or 0.5)
GOLD_PAUSE_BELOW = float(env_str("RANKLOOP_GOLD_PAUSE_BELOW") or 0.2)

# The default cache holds the login-failure counts (config/login_throttle.py); with several
# server processes it must be shared: RANKLOOP_CACHE_URL=redis://host:6379/2.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": cache_url}
        if (cache_url := env_str("RANKLOOP_CACHE_URL"))
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}
# Failed password logins allowed per (username, address) within the window (seconds); then
# the login pages answer 429 until the window ends.
LOGIN_FAILURE_LIMIT = env_int("RANKLOOP_LOGIN_FAILURE_LIMIT", 5)
LOGIN_FAILURE_WINDOW = env_int("RANKLOOP_LOGIN_FAILURE_WINDOW", 900)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "annotate"
LOGOUT_REDIRECT_URL = "login"

# Where trained models and export snapshots are written.
ARTIFACT_ROOT = Path(env_str("RANKLOOP_ARTIFACT_ROOT") or BASE_DIR / "artifacts")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "annotation.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # The API reads JSON only, strictly (config/api_input.py); every error is JSON with a
    # readable `detail` (config/api_errors.py).
    "DEFAULT_PARSER_CLASSES": ["config.api_input.StrictJSONParser"],
    "EXCEPTION_HANDLER": "config.api_errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "RankLoop API",
    "DESCRIPTION": "Human rankings of language-model outputs: batches, prompts, rankings, "
    "comparisons, streamed exports and frozen dataset snapshots.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its documentation page describe endpoints that need a login anyway.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # The documentation page's scripts and styles are served from here, not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Exports name annotators only by a keyed HMAC of their user id: stable for one key,
# unlinkable without it. Production requires a real secret (config/settings/production.py);
# rotating it changes every pseudonym, and so the bytes of every re-exported snapshot.
EXPORT_PSEUDONYM_KEY = (
    env_str("EXPORT_PSEUDONYM_KEY") or "insecure-development-pseudonym-key-do-not-deploy"
)

# Celery. Without a broker, tasks run in-process (eagerly) so a laptop needs no Redis.
# Two queues: `default` for quick work, `gpu` for training and sampling (one task at a time per
# worker: `celery -A config worker -Q gpu --concurrency 1`).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "memory://"
CELERY_TASK_ALWAYS_EAGER = env_str("CELERY_BROKER_URL") is None
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND")
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"training.tasks.run_training": {"queue": "gpu"}}
# A training task is acknowledged when it ends, so a worker that dies mid-run hands it back.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Limits of one training run. Redis redelivers an unacknowledged task after the visibility
# timeout, so it must exceed the longest run or a healthy run would be started twice.
TRAINING_TIME_LIMIT = env_int("RANKLOOP_TRAINING_TIME_LIMIT", 6 * 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": TRAINING_TIME_LIMIT + 3600}
CELERY_TASK_ANNOTATIONS = {
    "training.tasks.run_training": {
        "time_limit": TRAINING_TIME_LIMIT,
        "soft_time_limit": TRAINING_TIME_LIMIT - 60,
    }
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# The training loop.
# Retrain the reward model once this many comparisons arrived since the last run's snapshot.
RETRAIN_MIN_NEW_COMPARISONS = env_int("RANKLOOP_RETRAIN_MIN_NEW_COMPARISONS", 500)
# The fixed share of prompts kept out of every reward training snapshot to judge models on;
# changing the fraction or the seed moves prompts between the sides.
REWARD_HELDOUT_FRACTION = float(env_str("RANKLOOP_REWARD_HELDOUT_FRACTION") or 0.1)
REWARD_HELDOUT_SEED = env_int("RANKLOOP_REWARD_HELDOUT_SEED", 0)
# A new reward model is promoted unless its held-out accuracy is below the promoted one's by
# more than this.
REWARD_PROMOTION_TOLERANCE = float(env_str("RANKLOOP_REWARD_PROMOTION_TOLERANCE") or 0.01)
# Nor is a model promoted whose held-out accuracy is below this (0.5: a coin).
REWARD_MIN_ACCURACY = float(env_str("RANKLOOP_REWARD_MIN_ACCURACY") or 0.5)
# rewards.train.TrainConfig fields for runs from the loop, e.g. {"base": "tiny"} for a demo.
REWARD_TRAIN_DEFAULTS = env_json("RANKLOOP_REWARD_TRAIN", {})
# training.ppo.PPOConfig fields for policy runs, e.g. {"policy": "/models/smollm2.gguf"}; its
# "policy" is the base the first policy run starts from (later runs start from the promoted one).
POLICY_PPO_DEFAULTS = env_json("RANKLOOP_POLICY_PPO", {})
# A policy run's result is promoted unless its KL to the policy it started from, per response
# averaged over its last steps, exceeds this many nats (it drifted off to exploit the reward).
POLICY_MAX_KL = float(env_str("RANKLOOP_POLICY_MAX_KL") or 12.0)
# A running run whose worker has not reported for this long is marked failed (and retried once).
RUN_HEARTBEAT_TIMEOUT = env_int("RANKLOOP_RUN_HEARTBEAT_TIMEOUT", 600)

# Security headers, the same everywhere so that what passes on a laptop passes in production
# (config/settings/production.py adds HTTPS, secure cookies and HSTS).
# The pages load scripts and styles from /static/ only, with no inline code (config/csp.py).
CONTENT_SECURITY_POLICY = env_str("DJANGO_CONTENT_SECURITY_POLICY") or (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Request size limits. Rankings and API calls are small; batches arrive through
# `import_batch`, not through a request. A body over the limit is refused before it is parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int("DJANGO_FILE_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
DATA_UPLOAD_MAX_NUMBER_FIELDS = env_int("DJANGO_DATA_UPLOAD_MAX_NUMBER_FIELDS", 1000)
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("DJANGO_DATA_UPLOAD_MAX_NUMBER_FILES", 10)

# Logs go to stderr: plain lines by default, one JSON object a line with LOG_FORMAT=json (the
# production default).
LOG_LEVEL = env_str("LOG_LEVEL") or "INFO"
LOGGING = logging_config(format=env_str("LOG_FORMAT") or "plain", level=LOG_LEVEL)
