"""Optional ``INSTALLED_APPS`` entry: adds system checks for the probe's configuration."""

from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import setting_changed


class DjangoscopeProbeConfig(AppConfig):
    name = "djangoscope.probe"
    label = "djangoscope_probe"
    verbose_name = "djangoscope probe"

    def ready(self) -> None:
        from . import checks, conf  # noqa: F401  (registers the checks)

        setting_changed.connect(conf.reset, dispatch_uid="djangoscope-conf-reset")
