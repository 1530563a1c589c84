"""The package version: ``package.xml`` is its one source (ROS requires it there).

``setup.py`` reads ``package.xml``; at run time the version comes from the installed
distribution's metadata (pip and colcon installs alike), or from ``package.xml`` in a source
checkout.
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path
import re

PACKAGE = 'darknet53_ros'


def read_package_xml_version(path: str | Path) -> str:
    """The ``<version>`` of a ROS ``package.xml``."""
    text = Path(path).read_text(encoding='utf-8')
    match = re.search(r'<version>\s*([^<\s]+)\s*</version>', text)
    if match is None:
        raise ValueError(f'{path}: no <version> element')
    return match.group(1)


def _version() -> str:
    source = Path(__file__).resolve().parents[1] / 'package.xml'
    if source.is_file():
        return read_package_xml_version(source)
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # pragma: no cover - not installed, no source tree
        return '0+unknown'


__version__ = _version()
