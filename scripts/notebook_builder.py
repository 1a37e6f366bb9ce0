"""Shared by scripts/nb_0N.py: turn a list of (kind, source[, tags]) cells into a notebook."""

from pathlib import Path

import nbformat as nbf

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def write_notebook(cells: list[tuple], name: str, directory: Path = NOTEBOOKS) -> Path:
    """Write `{directory}/{name}` from `cells` (kind "md" or "code"), without outputs."""
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, source, *tags in cells:
        cell = nbf.v4.new_markdown_cell(source) if kind == "md" else nbf.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags[0]
        nb.cells.append(cell)
    path = Path(directory) / name
    nbf.write(nb, path)
    return path


if __name__ == "__main__":
    import runpy

    for script in sorted(Path(__file__).parent.glob("nb_0*.py")):
        runpy.run_path(str(script), run_name="__main__")
