"""Settings, all from environment variables with safe development defaults.

One file on purpose: every knob an operator can turn is listed here and in the
README's settings table. With DEBUG off, a missing SECRET_KEY is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from ops.ratelimit import parse_rate
from ops.sizes import parse_size

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value.replace("_", ""))
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_size(name: str, default: int) -> int:
    """A size in bytes, plain or with a unit (``500MB``, ``2GiB``: ops.sizes)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


def env_rate(name: str, default: str) -> str:
    """A rate limit, ``HITS/SECONDS`` or ``off``; checked here, parsed where it is used."""
    value = env_str(name, default)
    try:
        parse_rate(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None
    return value


DEBUG = env_bool("DEBUG", True)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    # Listed before staticfiles so that its `runserver` (which migrates first) wins.
    "images.apps.ImagesConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    # Swagger UI's files, served as our own static files (never from a CDN).
    "drf_spectacular_sidecar",
]

MIDDLEWARE = [
    "ops.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Django's session, auth and message middleware, skipped on API routes
    # (see ops.middleware; sessions and auth still run there in token mode).
    "ops.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "ops.middleware.AuthenticationMiddleware",
    "ops.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# The API's own routes (URL paths, by prefix).
API_PATH_PREFIXES = ("/collections", "/devices", "/.well-known/core", "/healthz", "/metrics")

if DEBUG:
    MIDDLEWARE.insert(0, "ops.middleware.DebugErrorsAsContractMiddleware")

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# SQLite (WAL, busy timeout, IMMEDIATE transactions so concurrent writers queue
# instead of failing) by default; PostgreSQL through DATABASE_URL in production.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": env_int("SQLITE_BUSY_TIMEOUT", 20),
        "transaction_mode": "IMMEDIATE",
        "init_command": ("PRAGMA journal_mode=WAL;PRAGMA synchronous=FULL;PRAGMA foreign_keys=ON;"),
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

REDIS_URL = env_str("REDIS_URL", "")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- The image service -------------------------------------------------------
IMAGES_MAX_BYTES = env_int("IMAGES_MAX_BYTES", 50_000_000)
IMAGES_MAX_PIXELS = env_int("IMAGES_MAX_PIXELS", 100_000_000)
IMAGES_MAX_FRAMES = env_int("IMAGES_MAX_FRAMES", 1_000)
# Scans of one JPEG picture (API.md §15): real progressive JPEGs have 10 or
# so (libjpeg's and mozjpeg's default scripts), baseline ones 1.
IMAGES_MAX_JPEG_SCANS = env_int("IMAGES_MAX_JPEG_SCANS", 100)
# Seconds a client or proxy may reuse a download by device and time before it
# revalidates (downloads by id never change and are marked immutable).
IMAGES_CACHE_MAX_AGE = env_int("IMAGES_CACHE_MAX_AGE", 3600)
# Downloads (GET/HEAD of /collections/images...) answered before Django's full
# handler, through the same middleware hooks and view (images/http/fastpath.py).
IMAGES_DOWNLOAD_FAST_PATH = env_bool("IMAGES_DOWNLOAD_FAST_PATH", True)
# "open": anyone may upload and read (the original's behaviour, the default).
# "token": uploads need a device token, reads a reader or device token or a
# staff user's login (images.http.auth, docs/security-tokens.md).
IMAGES_AUTH = env_str("IMAGES_AUTH", "open")
if IMAGES_AUTH not in ("open", "token"):
    raise ImproperlyConfigured("IMAGES_AUTH must be 'open' or 'token'")
# Upload rate limits, "HITS/SECONDS" (sliding window, ops.ratelimit) per device
# and per client address; "off" for none. On by default in token mode only.
IMAGES_RATE_DEVICE = env_rate("IMAGES_RATE_DEVICE", "120/60" if IMAGES_AUTH == "token" else "off")
IMAGES_RATE_CLIENT = env_rate("IMAGES_RATE_CLIENT", "600/60" if IMAGES_AUTH == "token" else "off")
# "inline": full lossless optimization before the upload is answered.
# "deferred": a fast pass before, the full one by `manage.py optimize --watch`
# (which `serve` runs): ingest is several times faster; the bytes, sha256 and
# ETag of an image change once, when its full pass is done.
IMAGES_OPTIMIZE = env_str("IMAGES_OPTIMIZE", "inline")
if IMAGES_OPTIMIZE not in ("inline", "deferred"):
    raise ImproperlyConfigured("IMAGES_OPTIMIZE must be 'inline' or 'deferred'")
# Seconds a worker holds a claimed image before another may take it over
# (a worker that died); how often one image may be tried before it is kept
# as received; the backlog age past which the optimizer trades ratio for speed.
IMAGES_OPTIMIZE_LEASE = env_int("IMAGES_OPTIMIZE_LEASE", 300)
# Hold JPEGs (and MPOs) at rest as JPEG XL, served back bit for bit (API.md
# §12); off: JPEGs get mozjpeg's lossless optimization, as before.
# IMAGES_ARCHIVE_JPEG is this setting's former name, still read (deprecated).
IMAGES_COMPACT_JPEG = env_bool("IMAGES_COMPACT_JPEG", env_bool("IMAGES_ARCHIVE_JPEG", True))
IMAGES_OPTIMIZE_ATTEMPTS = env_int("IMAGES_OPTIMIZE_ATTEMPTS", 3)
IMAGES_OPTIMIZE_LAG_BOUND = env_int("IMAGES_OPTIMIZE_LAG_BOUND", 60)
# Decoded size (width x height x bytes per pixel x frames) past which the
# background optimizer keeps an image as received instead of trying (API.md
# §15): about 93 ms of CPU per MB, so at most about 4.5 s here; a 12 MP
# camera's RGB pixels are 36 MB. 0: no bound.
IMAGES_OPTIMIZE_MAX_PIXEL_BYTES = env_size("IMAGES_OPTIMIZE_MAX_PIXEL_BYTES", 48_000_000)

# Retention (API.md §11, §16), off (0) by default: delete images received
# more than this many days ago; keep only each device's newest N by
# timestamp; keep the installation's Σ atRestSize under this many bytes
# (plain or 500GB, 2TiB), the oldest received going first. Policies
# (`manage.py policy`) override the first two per device, and bound bytes.
# `serve` prunes every IMAGES_RETENTION_INTERVAL seconds.
IMAGES_RETENTION_DAYS = env_int("IMAGES_RETENTION_DAYS", 0)
IMAGES_RETENTION_MAX_PER_DEVICE = env_int("IMAGES_RETENTION_MAX_PER_DEVICE", 0)
IMAGES_RETENTION_MAX_BYTES = env_size("IMAGES_RETENTION_MAX_BYTES", 0)
IMAGES_RETENTION_INTERVAL = env_int("IMAGES_RETENTION_INTERVAL", 300)

# Live events (API.md §13): the channel between processes and instances
# ("auto": PostgreSQL's LISTEN/NOTIFY on PostgreSQL, local sockets on SQLite;
# "redis": pub/sub on REDIS_URL), and seconds between keep-alive comments.
IMAGES_EVENTS = env_str("IMAGES_EVENTS", "auto")
IMAGES_EVENTS_KEEPALIVE = env_int("IMAGES_EVENTS_KEEPALIVE", 15)
# Event streams open at once per client address, and per token (API.md §15).
IMAGES_EVENTS_PER_CLIENT = env_int("IMAGES_EVENTS_PER_CLIENT", 20)
# Set by ``serve``: the port of its stream listener, where the gallery's
# pages open their streams (0: no listener, the streams are served in place).
IMAGES_EVENTS_PORT = env_int("IMAGES_EVENTS_PORT", 0)
# Set by ``serve`` for its HTTP workers: the event streams each may send on
# the API port, from a thread each (docs/live.md); past them 503. -1: no limit.
IMAGES_EVENTS_THREADS = env_int("IMAGES_EVENTS_THREADS", -1)
# Set by ``serve``: where its processes count each client's open streams
# together (images/live/holds.py); unset, each process counts its own.
IMAGES_EVENTS_HOLDS_DIR = env_str("IMAGES_EVENTS_HOLDS_DIR", "")
# Set by ``serve`` for its stream listener: the API's own port, whose pages
# (http://<host>:<port>) may read the streams across origins (API.md §15).
IMAGES_API_PORT = env_int("IMAGES_API_PORT", 0)
# More origins whose pages may read the event streams across origins
# (comma-separated, e.g. https://dashboard.example.org); none by default.
IMAGES_EVENTS_ALLOWED_ORIGINS = env_list("IMAGES_EVENTS_ALLOWED_ORIGINS")
# CoAP Observe registrations on latest: at most this many per client
# endpoint, and in all (past either, a registration is answered as a plain GET).
IMAGES_OBSERVE_PER_PEER = env_int("IMAGES_OBSERVE_PER_PEER", 32)
IMAGES_OBSERVE_TOTAL = env_int("IMAGES_OBSERVE_TOTAL", 10000)

# Deliveries out (API.md §16, docs/integrations.md): webhooks are registered
# with ``manage.py webhook``; IMAGES_MQTT=mqtt[s]://[user:pass@]host[:port][/prefix]
# publishes each image stored to a broker. An event a receiver keeps
# refusing is given up after IMAGES_DELIVERY_GIVE_UP_HOURS of trying.
IMAGES_MQTT = env_str("IMAGES_MQTT", "")
IMAGES_DELIVERY_GIVE_UP_HOURS = env_int("IMAGES_DELIVERY_GIVE_UP_HOURS", 24)
# Seconds a webhook receiver may take to answer one delivery.
IMAGES_WEBHOOK_TIMEOUT = env_int("IMAGES_WEBHOOK_TIMEOUT", 10)

# Where image bytes live (API.md §10): "db" (in the database row, the
# default) or "s3://BUCKET[/PREFIX]", an S3-compatible object store at
# S3_ENDPOINT_URL (unset: AWS), with the standard AWS_* credentials.
# "db" or s3://BUCKET[/PREFIX], checked at start-up by the rules movestorage
# applies (images/apps.py, images.storage.objects.Bucket.parse).
IMAGES_STORAGE = env_str("IMAGES_STORAGE", "db")
S3_ENDPOINT_URL = env_str("S3_ENDPOINT_URL", "") or None
# Seconds a store request may take before the upload or download is a 503.
S3_TIMEOUT = env_int("S3_TIMEOUT", 10)
# Bytes of recently read images (checked, up to 1 MiB held each) each process keeps.
IMAGES_STORAGE_CACHE_BYTES = env_int("IMAGES_STORAGE_CACHE_MB", 64) * 1024 * 1024

COAP_HOST = env_str("COAP_HOST", "::")
COAP_PORT = env_int("COAP_PORT", 5683)
# Token mode over CoAP: the OSCORE security contexts (RFC 8613) that
# `manage.py coapcontext` provisions and `runcoap` uses (docs/coap.md).
COAP_OSCORE_DIR = Path(env_str("COAP_OSCORE_DIR", str(BASE_DIR / "oscore")))

# Bodies are read by our own parsers, which check Content-Length against the
# per-format limit first (images.limits); this is Django's outer guard.
DATA_UPLOAD_MAX_MEMORY_SIZE = None
# Where a raw image upload over 1 MiB is spooled while it is checked and
# stored (formats.body.spool_body); the system's temporary directory if unset.
FILE_UPLOAD_TEMP_DIR = env_str("UPLOAD_TEMP_DIR", "") or None

REST_FRAMEWORK = {
    # Both do nothing in open mode (images.http.auth); a view that is open in
    # every mode says so itself.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "images.http.auth.BearerTokenAuthentication",
        "images.http.auth.StaffSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["images.http.auth.ImageAccess"],
    "UNAUTHENTICATED_USER": None,
    # Trusted reverse proxies in front of us: the client address for rate
    # limits is then the one they append to X-Forwarded-For. 0: REMOTE_ADDR.
    "NUM_PROXIES": env_int("NUM_PROXIES", 0),
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "formats.cbor.CBORRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "formats.json.StrictJSONParser",
        "formats.cbor.CBORParser",
    ],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "images.http.negotiation.BodyFormatNegotiation",
    "DEFAULT_METADATA_CLASS": "images.http.metadata.AllowOnlyMetadata",
    "EXCEPTION_HANDLER": "images.http.errors.exception_handler",
    "UNICODE_JSON": True,
    "COMPACT_JSON": True,
    "NON_FIELD_ERRORS_KEY": "detail",
    # ?format= would let a query string pick the renderer (and 404 an upload);
    # content negotiation is Accept's job alone.
    "URL_FORMAT_OVERRIDE": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "CoRE image collection API",
    "DESCRIPTION": (
        "Devices upload images (JSON, CBOR or the raw image); readers download them by "
        "device and time or by id, list them, and fetch thumbnails. The same resources "
        "are served over CoAP. With IMAGES_AUTH=token, requests need a bearer token "
        "(docs/security-tokens.md); in the default open mode they need nothing."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "images.http.openapi.postprocess",
    ],
}

# The gallery's login in token mode (staff users only; manage.py createsuperuser).
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "gallery"
LOGOUT_REDIRECT_URL = "login"

if not DEBUG:
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"format": "%(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "requests": {"class": "logging.StreamHandler", "formatter": "json"},
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # One JSON line per request (ops.middleware), on standard error.
        "requests": {
            "handlers": ["requests"],
            "level": env_str("REQUEST_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
        # The dev server's own access line repeats ours.
        "django.server": {"level": "WARNING"},
    },
}
