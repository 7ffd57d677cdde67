"""WSGI entry point of the demo: ``djangoscope.resources.demo.wsgi:application``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

# Forced, not setdefault: a DJANGO_SETTINGS_MODULE inherited from a test run (pytest-django
# exports one) must not turn the demo into some other project.
os.environ["DJANGO_SETTINGS_MODULE"] = "djangoscope.resources.demo.settings"

application = get_wsgi_application()
