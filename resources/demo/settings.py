"""Settings of the demo bookshop: a dev server with the djangoscope probe installed.

Environment:

* ``DJANGOSCOPE_DEMO_DB``: path of the SQLite file (default: ``bookshop.sqlite3`` in a per-user
  cache directory, never inside the installed package, which may be read-only).
* ``DJANGOSCOPE_DEMO_NO_PROBE=1``: run without the probe (no middleware, no app). This is the
  benchmarks' baseline, and a way to run the demo while the probe is broken.
* ``DJANGOSCOPE_ADDRESS`` / ``DJANGOSCOPE_TOKEN``: read by the probe itself, not here.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _default_db_path() -> Path:
    """A per-user cache location, so several users (and the read-only package) never collide."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or tempfile.gettempdir())
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "djangoscope" / "demo" / "bookshop.sqlite3"


def _user_tag() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid else os.environ.get("USERNAME", "user")


def _db_path() -> Path:
    configured = os.environ.get("DJANGOSCOPE_DEMO_DB", "").strip()
    path = Path(configured).expanduser() if configured else _default_db_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        # No writable home (CI containers, sandboxes): fall back to the temp dir.
        path = Path(tempfile.gettempdir()) / f"djangoscope-demo-{_user_tag()}" / path.name
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


WITH_PROBE = not _truthy("DJANGOSCOPE_DEMO_NO_PROBE")

DEBUG = True
SECRET_KEY = "djangoscope-demo-not-a-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    *(["djangoscope.probe"] if WITH_PROBE else []),
    "djangoscope.resources.demo.bookshop",
]

MIDDLEWARE = [
    # First, so the probe times every other middleware too.
    *(["djangoscope.probe.middleware.ProbeMiddleware"] if WITH_PROBE else []),
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "djangoscope.resources.demo.urls"
WSGI_APPLICATION = "djangoscope.resources.demo.wsgi.application"
ASGI_APPLICATION = "djangoscope.resources.demo.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "debug": True,
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(_db_path()),
        # runserver serves requests on several threads; wait for the write lock, don't fail.
        "OPTIONS": {"timeout": 20},
    }
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "djangoscope-demo",
    },
    # Every miss costs ~20 ms, like a cold remote cache: /slow-cache/ shows it on the timeline.
    "slow": {
        "BACKEND": "djangoscope.resources.demo.slowcache.SlowLocMemCache",
        "LOCATION": "djangoscope-demo-slow",
        "OPTIONS": {"MISS_DELAY": 0.02},
    },
}

# Sessions live in the database; nothing in the demo touches them, so they cost no query.
SESSION_ENGINE = "django.contrib.sessions.backends.db"
MESSAGE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The probe reads its address and token from DJANGOSCOPE_ADDRESS / DJANGOSCOPE_TOKEN.
DJANGOSCOPE: dict[str, object] = {"PROJECT": "bookshop"}
