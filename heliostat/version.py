"""heliostat's version, as installed: `heliostat --version` and `heliostat_build_info`."""

from __future__ import annotations

import platform
from importlib import metadata


def version() -> str:
    try:
        return metadata.version("heliostat")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def python_version() -> str:
    return platform.python_version()
