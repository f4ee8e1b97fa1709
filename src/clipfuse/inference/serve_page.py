"""The web demo's page (``clipfuse serve``, ``GET /``) and its example images.

The page is one self-contained HTML file assembled from ``serve_static/`` (``index.html``,
``style.css``, ``app.js``: plain HTML, CSS and JavaScript, nothing fetched from elsewhere). It
posts an image to ``api/predict`` and composites the returned label PNG over the image on a
canvas, so the opacity slider and the original / overlay / labels views need no request.
"""

import html
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

# Formats every browser shows in an <img> (TIFF is not among them): the example images.
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


@dataclass(frozen=True)
class Examples:
    """Example images offered on the page: their ``names`` in ``folder``, the licence line
    shown under them and the licence file (served beside them), if the folder has one."""

    folder: Path | None = None
    names: tuple[str, ...] = ()
    licence: str | None = None
    licence_file: str | None = None

    def path(self, name: str) -> Path | None:
        """The file served as ``/examples/{name}``: an example or the licence file, else None
        (no other file of the folder is served)."""
        if self.folder is None or (name not in self.names and name != self.licence_file):
            return None
        return self.folder / name


def find_examples(folder: Path | None) -> Examples:
    """The images of ``folder`` (sorted, hidden files skipped), with the first line of its
    ``README.md`` as the licence line and its ``LICENSE*`` file; no examples for None."""
    if folder is None:
        return Examples()
    entries = sorted(path for path in folder.iterdir() if path.is_file())
    names = tuple(
        p.name
        for p in entries
        if p.suffix.lower() in EXAMPLE_SUFFIXES and not p.name.startswith(".")
    )
    licences = [p.name for p in entries if p.name.upper().startswith(("LICENSE", "LICENCE"))]
    readme = folder / "README.md"
    line = None
    if readme.is_file():
        lines = [text.strip().lstrip("#").strip() for text in readme.read_text().splitlines()]
        line = next((text for text in lines if text), None)
    if line is None and licences:
        line = f"licence: {licences[0]}"
    return Examples(folder, names, line, licences[0] if licences else None)


def demo_page(info: dict) -> str:
    """The page for the model and server that ``info`` describes (the ``/api/info`` answer)."""
    static = files("clipfuse.inference") / "serve_static"
    title = f"clipfuse: {html.escape(info['method'])} + {html.escape(info['backbone'])}"
    template = Template((static / "index.html").read_text(encoding="utf-8"))
    return template.substitute(
        title=title,
        style=(static / "style.css").read_text(encoding="utf-8"),
        info=json.dumps(info).replace("</", "<\\/"),
        script=(static / "app.js").read_text(encoding="utf-8"),
    )
