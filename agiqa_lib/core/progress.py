"""One progress-bar factory for every loop of the library: `progress_bar(iterable, **kwargs)`.

How a bar shows depends on where the code runs (the first rule that applies):

1. ``AGIQA_PROGRESS`` = ``widget`` | ``text`` | ``summary`` | ``off`` forces a mode
   (``run_all.sh`` and the notebook tests set ``summary``).
2. An IPython kernel whose parent process is papermill, nbconvert or nbclient (Linux, read
   from ``/proc``): ``summary``, since nobody watches a headless kernel's widgets.
3. Any other IPython kernel (JupyterLab, Notebook, VS Code): ``widget`` (`tqdm.notebook`,
   ipywidgets is a dependency); ``summary`` if ipywidgets cannot be imported.
4. Elsewhere: ``text`` (tqdm's terminal bar) when stderr is a terminal, else ``summary``
   (logs, CI).

``summary`` draws nothing while the loop runs and prints one line when it closes, e.g.
``train CLIP-AGIQA (train): 100/100 epochs in 41 s``; transient bars (``leave=False``) and
loops with nothing to do (0 of 0) print none.
A kernel's summary goes to stdout (a plain output line), elsewhere to stderr. A bar called
with ``disable=True`` stays silent in every mode.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Iterable

from tqdm.std import tqdm as text_tqdm

from agiqa_lib.core.errors import AgiqaError

MODES = ("widget", "text", "summary", "off")
ENV = "AGIQA_PROGRESS"
HEADLESS_RUNNERS = ("papermill", "nbconvert", "nbclient")
UNIT_NAMES = {"it": "step", "img": "image"}  # tqdm's default unit and the library's
PLURALS = {"batch": "batches"}


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> text_tqdm:
    """A tqdm bar over `iterable` (or a manual one with `total=`) in the mode of `progress_mode`."""
    mode = progress_mode()
    if mode == "off":
        kwargs["disable"] = True
    if mode == "widget" and not kwargs.get("disable"):
        from tqdm.notebook import tqdm as widget_tqdm

        return widget_tqdm(iterable, **kwargs)
    if mode == "summary":
        return SummaryBar(iterable, **kwargs)
    return text_tqdm(iterable, **kwargs)


def progress_mode() -> str:
    """The mode the rules of the module docstring choose here and now."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced:
        if forced not in MODES:
            raise AgiqaError(f"{ENV}={forced!r} is not one of {', '.join(MODES)}: set it to one "
                             "of them or unset it.")
        return forced
    if _in_kernel():
        if _headless_kernel():
            return "summary"
        return "widget" if importlib.util.find_spec("ipywidgets") else "summary"
    return "text" if _isatty(sys.stderr) else "summary"


class SummaryBar(text_tqdm):
    """A bar that counts silently and prints one line when it closes."""

    def __init__(self, iterable: Iterable | None = None, **kwargs: Any) -> None:
        self._target = kwargs.pop("file", None) or (sys.stdout if _in_kernel() else sys.stderr)
        self._summarised = False
        kwargs["file"] = _Discard()
        super().__init__(iterable, **kwargs)

    def close(self) -> None:
        if not self._summarised and not self.disable and self.leave and (self.n or self.total):
            self._summarised = True
            print(self.summary(), file=self._target, flush=True)
        self._summarised = True
        super().close()

    def summary(self) -> str:
        """``{desc}: {n}/{total} {unit} in {time}``."""
        unit = UNIT_NAMES.get(self.unit, self.unit)
        if self.n != 1 and not unit.endswith("s"):
            unit = PLURALS.get(unit, f"{unit}s")
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        label = f"{self.desc.rstrip(': ')}: " if self.desc else ""
        resumed = f" (resumed at {self.initial})" if self.initial else ""
        return f"{label}{count} {unit} in {format_seconds(self.format_dict['elapsed'])}{resumed}"


def format_seconds(seconds: float) -> str:
    """``0.4 s``, ``41 s``, ``12 min 5 s``, ``1 h 02 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class _Discard:
    """A file that swallows what tqdm draws."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _in_kernel() -> bool:
    """Whether this code runs in an IPython kernel (a notebook, papermill, VS Code)."""
    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _headless_kernel() -> bool:
    """Whether the kernel's parent process is a headless runner (Linux /proc only)."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return any(runner in command for runner in HEADLESS_RUNNERS)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
