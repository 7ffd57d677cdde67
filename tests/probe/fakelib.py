"""Library code for stack tests: source compiled under a site-packages file name.

The probe classifies frames by file path, so functions compiled with such a name count as
installed library code without installing anything.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from djangoscope.probe import stacks

SITE = next(p for p in sys.path if p.endswith("site-packages"))


def fake_library(package: str, source: str) -> tuple[str, dict[str, Any]]:
    """Compile ``source`` as ``site-packages/<package>/calls.py``; returns (file, namespace).

    The namespace has ``capture`` bound to :func:`stacks.capture_stack`.
    """
    path = os.path.join(SITE, package, "calls.py")
    namespace: dict[str, Any] = {"capture": stacks.capture_stack}
    exec(compile(source, path, "exec"), namespace)
    return path, namespace
