#!/usr/bin/env python
"""The demo's manage.py, runnable as a module or as a file.

    python -m djangoscope.resources.demo.manage migrate
    python -m djangoscope.resources.demo.manage seed_bookshop
    python -m djangoscope.resources.demo.manage runserver 127.0.0.1:8000

It always uses the demo settings, even when DJANGO_SETTINGS_MODULE is set (pytest-django
exports one to the subprocesses of a test run); ``--settings`` still overrides them.
"""

from __future__ import annotations

import os
import sys

SETTINGS_MODULE = "djangoscope.resources.demo.settings"


def main(argv: list[str] | None = None) -> None:
    """Run a management command against the demo project."""
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv if argv is None else argv)


if __name__ == "__main__":
    main()
