"""jinja2 rendering of iPXE scripts (from pxe/) and of service configs (dnsmasq)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

PACKAGE_TEMPLATES = Path(__file__).parent / "templates"
PXE_TEMPLATES = Path(__file__).resolve().parents[2] / "pxe"


class Renderer:
    def __init__(self, pxe_dir: Path = PXE_TEMPLATES, config_dir: Path = PACKAGE_TEMPLATES) -> None:
        loader = jinja2.FileSystemLoader([str(pxe_dir), str(config_dir)])
        self._env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined,
                                       keep_trailing_newline=True, autoescape=False)

    def render(self, template: str, **context: Any) -> str:
        return self._env.get_template(template).render(**context)
