"""Publish the executed notebooks of a run_all.sh run as reference notebooks (small, portable).

    python scripts/publish_notebooks.py OUT --dest notebooks/reference/agiqa3k_lite \
        --figures figures [--root DATASET_ROOT]

(`./run_all.sh ... --publish` calls it after the run.) For each `OUT/notebooks/0N_*.ipynb`:
inline PNG figures are downscaled to at most `--max-width` pixels and re-encoded as 256-colour
PNGs; volatile metadata goes (papermill timings and paths, execution timestamps, widget state,
the jupytext pairing, random cell ids); the machine's absolute paths in sources and outputs
become placeholders (`<out>`, `<root>`, `<cache>`, `<repo>`, `~`). The figures of
`OUT/figures/` are copied to `--figures`, re-encoded the same way. Prints each file's size.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
from pathlib import Path
from typing import Any

import nbformat
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MAX_WIDTH = 900         # pixels of an embedded figure
MAX_NOTEBOOK_BYTES = 1_000_000
VOLATILE_CELL_METADATA = ("papermill", "execution", "collapsed", "scrolled")


def compress_png(data: bytes, max_width: int = MAX_WIDTH) -> bytes:
    """A PNG downscaled to `max_width` (aspect kept) and quantised to 256 colours."""
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.width > max_width:
        height = round(image.height * max_width / image.width)
        image = image.resize((max_width, height), Image.LANCZOS)
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA")
    image = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue() if buffer.tell() < len(data) else data


def path_replacements(out: Path, root: str | None = None) -> list[tuple[str, str]]:
    """(absolute path, placeholder) pairs, longest path first."""
    cache = Path(os.environ.get("AGIQA_CACHE_DIR", Path.home() / ".cache" / "agiqa-study"))
    pairs = {str(out.resolve()): "<out>", str(out): "<out>", str(REPO): "<repo>",
             str(cache): "<cache>", str(cache.resolve()): "<cache>", str(Path.home()): "~"}
    if root:
        pairs.update({str(Path(root)): "<root>", str(Path(root).resolve()): "<root>"})
    return sorted(((k, v) for k, v in pairs.items() if len(k) > 1), key=lambda kv: -len(kv[0]))


def _scrub(value: Any, replacements: list[tuple[str, str]]) -> Any:
    """`value` with every absolute path replaced (strings, lists and dicts, recursively)."""
    if isinstance(value, str):
        for path, placeholder in replacements:
            value = value.replace(path, placeholder)
        return value
    if isinstance(value, list):
        return [_scrub(v, replacements) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, replacements) for k, v in value.items()}
    return value


def clean_notebook(notebook: nbformat.NotebookNode, replacements: list[tuple[str, str]],
                   max_width: int = MAX_WIDTH) -> nbformat.NotebookNode:
    """The published copy of an executed notebook (see the module docstring)."""
    meta = notebook.metadata
    meta.pop("jupytext", None)
    meta.pop("widgets", None)
    parameters = meta.get("papermill", {}).get("parameters")
    meta.pop("papermill", None)
    if parameters is not None:
        meta["papermill"] = {"parameters": _scrub(parameters, replacements)}
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:02d}"
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        cell.source = _scrub(cell.source, replacements)
        outputs = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            data.pop("application/vnd.jupyter.widget-view+json", None)
            if output.get("output_type") in ("display_data", "execute_result") and not data:
                continue
            if "image/png" in data:
                png = compress_png(base64.b64decode(data["image/png"]), max_width)
                data["image/png"] = base64.b64encode(png).decode("ascii")
            outputs.append(nbformat.from_dict(_scrub(dict(output), replacements)))
        if cell.cell_type == "code":
            cell.outputs = outputs
    return notebook


def publish(out: Path, dest: Path, figures: Path | None = None, root: str | None = None,
            max_width: int = MAX_WIDTH) -> list[Path]:
    """Write the cleaned notebooks of `out/notebooks` to `dest` (and figures to `figures`)."""
    sources = sorted((out / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not sources:
        raise SystemExit(f"publish: no executed notebooks in {out / 'notebooks'}")
    replacements = path_replacements(out, root)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        notebook = clean_notebook(nbformat.read(source, as_version=4), replacements, max_width)
        target = dest / source.name
        nbformat.write(notebook, target)
        written.append(target)
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        for png in sorted((out / "figures").glob("*.png")):
            target = figures / png.name
            target.write_bytes(compress_png(png.read_bytes(), max_width=1400))
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder of a run_all.sh run")
    parser.add_argument("--dest", type=Path, required=True, help="folder for the notebooks")
    parser.add_argument("--figures", type=Path, help="folder for the figures (not copied if absent)")
    parser.add_argument("--root", help="dataset folder of the run (its path becomes <root>)")
    parser.add_argument("--max-width", type=int, default=MAX_WIDTH,
                        help=f"width of embedded figures in pixels (default {MAX_WIDTH})")
    args = parser.parse_args(argv)
    too_big = []
    for path in publish(args.out, args.dest, args.figures, args.root, args.max_width):
        size = path.stat().st_size
        print(f"[publish] {path} ({size / 1024:.0f} KB)")
        if path.suffix == ".ipynb" and size > MAX_NOTEBOOK_BYTES:
            too_big.append(path.name)
    if too_big:
        print(f"[publish] over {MAX_NOTEBOOK_BYTES // 1000} KB: {', '.join(too_big)}; pass a "
              "smaller --max-width", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
