"""Django settings for RAGsite. Everything deployment-specific comes from the environment."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from ragsite import pgtuning
from resilience.env import (
    EnvError,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_log_level,
    env_path,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# Runtime files: the embedded database (created by its first connection, ragsite/pgembedded) and
# gunicorn's metrics folder. Nothing is written here at import: with DATABASE_URL, a read-only
# deployment may point it anywhere.
VAR_DIR = env_path("RAGSITE_VAR_DIR", BASE_DIR / "var")

# SECURITY
# RAGSITE_ENV=production turns on the checks a public deployment needs (a real secret key).
RAGSITE_ENV = env_choice("RAGSITE_ENV", "development", ["development", "production"])
DEBUG = env_bool("DJANGO_DEBUG", False)
_DEV_SECRET_KEY = "ragsite-development-only-key-not-for-production"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "" if RAGSITE_ENV == "production" else _DEV_SECRET_KEY)
if RAGSITE_ENV == "production" and (len(SECRET_KEY) < 32 or SECRET_KEY == _DEV_SECRET_KEY):
    raise EnvError(
        "DJANGO_SECRET_KEY must be set to a random string of 32+ characters when RAGSITE_ENV=production "
        "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))')"
    )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# Behind an HTTPS-terminating proxy: trust its X-Forwarded-Proto and send cookies only over HTTPS.
RAGSITE_HTTPS = env_bool("RAGSITE_HTTPS", False)
if RAGSITE_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("RAGSITE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_SSL_REDIRECT = env_bool("RAGSITE_SSL_REDIRECT", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# APPLICATIONS
INSTALLED_APPS = [
    "ragsite.admin_site.OpsAdminConfig",  # django.contrib.admin with the operations overview
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "procrastinate.contrib.django",  # the job queue; before rag so rag's tasks register on its app
    "rag",
    "resilience",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "ragsite.request_id.RequestIdMiddleware",
    "ragsite.body_limit.BodyLimitMiddleware",  # before anything that could read the body
    "ragsite.admin_guard.AdminGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "resilience.orders.BreakerOrdersMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "ragsite.urls"
WSGI_APPLICATION = "ragsite.wsgi.application"

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


# DATABASE
def database_from_url(url: str) -> dict:
    """DATABASES entry for a postgres:// URL (any Postgres server with pgvector)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise EnvError(f"DATABASE_URL must be a postgres:// URL, got scheme {parsed.scheme!r}")
    query = parse_qs(parsed.query)
    # libpq style: postgres://user@/db?host=/path/to/socket-dir for a unix socket.
    host = query.get("host", [unquote(parsed.hostname or "")])[0]
    options = {"sslmode": query["sslmode"][0]} if "sslmode" in query else {}
    return {
        "ENGINE": "ragsite.postgres",
        "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": host,
        "PORT": str(parsed.port or ""),
        "OPTIONS": options,
    }


DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    _database = database_from_url(DATABASE_URL)
else:
    _database = {
        "ENGINE": "ragsite.pgembedded",
        "NAME": "postgres",
        "USER": "postgres",
        "OPTIONS": {
            "embedded_data_dir": str(VAR_DIR / "pgdata"),
            # Memory and parallel index builds sized for this machine; RAGSITE_PG_<NAME> overrides.
            "embedded_server_settings": pgtuning.embedded_settings(),
        },
    }
_database["CONN_MAX_AGE"] = env_int("RAGSITE_DB_CONN_MAX_AGE", 60, minimum=0)
# A question's first statement (rag.first_look) is prepared on each connection after 5 runs, not
# planned on every question; Django's own cursors bind on the client and never prepare. A pooler
# in transaction mode that cannot keep prepared statements (pgbouncer before 1.21, or without
# max_prepared_statements) needs RAGSITE_DB_PREPARED_STATEMENTS=false.
_database["OPTIONS"]["prepare_threshold"] = 5 if env_bool("RAGSITE_DB_PREPARED_STATEMENTS", True) else None
_database["CONN_HEALTH_CHECKS"] = True
_database["TEST"] = {"NAME": env_str("RAGSITE_TEST_DB_NAME", "") or None}
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# AUTH
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# I18N
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# STATIC
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# whitenoise warns at every start without it; a read-only RAGSITE_VAR_DIR is left as it is
# (collectstatic will say so; serving needs nothing written).
with contextlib.suppress(OSError):
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve app static files (admin, API docs) straight from the installed apps, so no collectstatic
# step is needed before the first run; `make serve` still collects them for compressed serving.
WHITENOISE_USE_FINDERS = True

# LIMITS
# Every request body is at most RAGSITE_MAX_BODY_BYTES, except a multipart upload to
# /api/documents, whose file may reach RAGSITE_MAX_UPLOAD_BYTES. ragsite.body_limit refuses a larger
# body from its Content-Length before reading it (DRF's JSON parser reads the body without
# looking at DATA_UPLOAD_MAX_MEMORY_SIZE, which only bounds form fields).
RAGSITE_MAX_BODY_BYTES = env_int("RAGSITE_MAX_BODY_BYTES", 2_621_440, minimum=1024)
RAGSITE_MAX_UPLOAD_BYTES = env_int("RAGSITE_MAX_UPLOAD_BYTES", 20 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = RAGSITE_MAX_BODY_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = RAGSITE_MAX_BODY_BYTES  # a larger upload is spooled to a temporary file

# SIGN-IN
# The search page's sign-in (Django's auth views); the admin keeps its own.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# REST FRAMEWORK
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "rag.errors.api_exception_handler",
    "DEFAULT_PARSER_CLASSES": ["rag.parsers.SafeJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # The API answers JSON whatever the query string says: ?format=xml is ignored, not a 404.
    "URL_FORMAT_OVERRIDE": None,
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rag.access.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rag.access.ReadOrQuery"],
    "DEFAULT_THROTTLE_CLASSES": ["rag.access.PerKeyThrottle", "rag.access.PerIpThrottle"],
    # Client addresses come from REMOTE_ADDR unless this many proxies in front are trusted to set
    # X-Forwarded-For: a client must not be able to pick its own throttle bucket.
    "NUM_PROXIES": env_int("RAGSITE_NUM_PROXIES", 0, minimum=0),
}

# ACCESS
# Throttle counters live in the database cache so every worker counts against the same budget.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "ragsite_cache"},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "RAGsite API",
    "DESCRIPTION": "Question answering over your own documents.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# RAG
# What one file may cost to read; beyond it the file is refused with the reason, nothing stored.
RAGSITE_INGEST_MAX_PAGES = env_int("RAGSITE_INGEST_MAX_PAGES", 2000, minimum=1)
RAGSITE_INGEST_MAX_CHARS = env_int("RAGSITE_INGEST_MAX_CHARS", 5_000_000, minimum=1000)
RAGSITE_INGEST_MAX_SECONDS = env_int("RAGSITE_INGEST_MAX_SECONDS", 60, minimum=1)
RAGSITE_CHUNK_SIZE = env_int("RAGSITE_CHUNK_SIZE", 800, minimum=100)
RAGSITE_CHUNK_OVERLAP = env_int("RAGSITE_CHUNK_OVERLAP", 150, minimum=0)
if RAGSITE_CHUNK_OVERLAP >= RAGSITE_CHUNK_SIZE:
    raise EnvError("RAGSITE_CHUNK_OVERLAP must be smaller than RAGSITE_CHUNK_SIZE")
# Folders whose files the admin may re-ingest. A document sent through the API is never read from
# disk, whatever its source says; a file ingested from the command line remembers its folder.
RAGSITE_DOCUMENT_ROOTS = [str(Path(p).expanduser().resolve()) for p in env_list("RAGSITE_DOCUMENT_ROOTS", [])]
# Places of the k sources one document may take (its neighbouring chunks merge into one source).
RAGSITE_MAX_PER_DOCUMENT = env_int("RAGSITE_MAX_PER_DOCUMENT", 1, minimum=1)
# Rerank the first candidates by their sentences' similarity to the question (no model call).
RAGSITE_RERANK = env_bool("RAGSITE_RERANK", True)
# Below this similarity between the question and the best sentence of the best passage, the answer
# says the documents do not cover the question; below the second, so does a question whose words
# are mostly unknown to the collection (rag.declining). Calibrated on the golden set's tuning half.
# The floors are those of the local model's vectors: another embedding model's similarities sit on
# another scale, so it declines nothing until its floors are set here (check them with evaluate).
RAGSITE_RELEVANCE_FLOORS = {"local/all-MiniLM-L6-v2": (0.44, 0.47)}
if "RAGSITE_RELEVANCE_FLOOR" in os.environ:  # the operator's floors, for whatever model is in use
    _floor = env_float("RAGSITE_RELEVANCE_FLOOR", 0.44, minimum=-1.0, maximum=1.0)  # a cosine similarity
    RAGSITE_RELEVANCE_FLOORS = {
        "*": (_floor, env_float("RAGSITE_RELEVANCE_FLOOR_UNKNOWN_WORDS", _floor, minimum=-1.0, maximum=1.0))
    }
RAGSITE_MAX_QUESTION_CHARS = 2000
RAGSITE_MAX_K = 50
# Postgres cancels a full-text search slower than this (0: never); the answer then ranks by vectors.
RAGSITE_RETRIEVAL_TIMEOUT_MS = env_int("RAGSITE_RETRIEVAL_TIMEOUT_MS", 1500, minimum=0)

# JOBS
# Ingestion, re-embedding and cache warming run as jobs on procrastinate, a queue in this same
# Postgres: workers (`manage.py procrastinate worker`) on any machine pointed at the database.
RAGSITE_INLINE_MAX_CHARS = env_int("RAGSITE_INLINE_MAX_CHARS", 20_000, minimum=0)
# A worker writes a heartbeat every RAGSITE_WORKER_HEARTBEAT_SECONDS; one silent for
# RAGSITE_WORKER_STALLED_SECONDS is taken for dead and its jobs are queued again.
RAGSITE_WORKER_HEARTBEAT_SECONDS = env_int("RAGSITE_WORKER_HEARTBEAT_SECONDS", 10, minimum=1)
RAGSITE_WORKER_STALLED_SECONDS = env_int("RAGSITE_WORKER_STALLED_SECONDS", 30, minimum=2)
if RAGSITE_WORKER_STALLED_SECONDS <= RAGSITE_WORKER_HEARTBEAT_SECONDS:
    raise EnvError("RAGSITE_WORKER_STALLED_SECONDS must be longer than RAGSITE_WORKER_HEARTBEAT_SECONDS")
PROCRASTINATE_ON_APP_READY = "rag.tasks.on_app_ready"
PROCRASTINATE_WORKER_DEFAULTS = {
    # One job at a time per process: ingestion is CPU-bound; add processes to add capacity.
    "concurrency": env_int("RAGSITE_WORKER_CONCURRENCY", 1, minimum=1),
    "update_heartbeat_interval": RAGSITE_WORKER_HEARTBEAT_SECONDS,
    "stalled_worker_timeout": RAGSITE_WORKER_STALLED_SECONDS,
    # Finished jobs are kept as rag's Job rows; the queue keeps only failed and cancelled ones.
    "delete_jobs": "successful",
}

# METRICS
# /metrics and the /api/*/metrics endpoints answer these addresses (IPs or CIDR networks; "none"
# for no address) without a token; anyone else must send "Authorization: Bearer <token>". With
# no token set, only the listed addresses get in.
# Behind a proxy on the same host every visitor arrives from loopback: in production the metrics
# endpoints answer the token alone unless addresses are listed explicitly.
RAGSITE_METRICS_ALLOW = env_list("RAGSITE_METRICS_ALLOW", [] if RAGSITE_ENV == "production" else ["127.0.0.0/8", "::1"])
if [item.lower() for item in RAGSITE_METRICS_ALLOW] == ["none"]:
    RAGSITE_METRICS_ALLOW = []
for _network in RAGSITE_METRICS_ALLOW:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise EnvError(f"RAGSITE_METRICS_ALLOW: {_network!r} is not an IP address or CIDR network") from None
# Under gunicorn every worker writes its metrics to files there (ragsite/gunicorn_conf.py makes it).
_multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if _multiproc_dir and not (os.path.isdir(_multiproc_dir) and os.access(_multiproc_dir, os.W_OK)):
    raise EnvError(
        f"PROMETHEUS_MULTIPROC_DIR={_multiproc_dir} is not a writable directory: create it (empty) before "
        "the workers start, or unset it"
    )
RAGSITE_METRICS_TOKEN = env_str("RAGSITE_METRICS_TOKEN", "")
if RAGSITE_METRICS_TOKEN and len(RAGSITE_METRICS_TOKEN) < 16:
    raise EnvError("RAGSITE_METRICS_TOKEN must be at least 16 characters (or unset)")

# LOGGING
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "ragsite.request_id.RequestIdFilter"},
        "routine_jobs": {"()": "ragsite.request_id.RoutineJobFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s %(message)s"},
        "json": {"()": "ragsite.request_id.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if env_bool("RAGSITE_LOG_JSON", False) else "plain",
            "filters": ["request_id", "routine_jobs"],
        }
    },
    "root": {"handlers": ["console"], "level": env_log_level("RAGSITE_LOG_LEVEL", "INFO")},
    "loggers": {
        "pgserver": {"level": "WARNING"},
        "sentence_transformers": {"level": "WARNING"},
        # Every process registers the tasks at start-up; workers still log each job they run.
        "procrastinate.blueprints": {"level": "WARNING"},
        "procrastinate.jobs": {"level": "WARNING"},
        "procrastinate.periodic": {"level": "WARNING"},
    },
}
