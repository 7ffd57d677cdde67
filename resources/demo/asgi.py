"""ASGI entry point of the demo: ``djangoscope.resources.demo.asgi:application``."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

# Forced, not setdefault: a DJANGO_SETTINGS_MODULE inherited from a test run (pytest-django
# exports one) must not turn the demo into some other project.
os.environ["DJANGO_SETTINGS_MODULE"] = "djangoscope.resources.demo.settings"

application = get_asgi_application()
