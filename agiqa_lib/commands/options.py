"""CLI options derived from a study config's fields, so the CLI and the notebooks share one
definition (name, type, default, help, choices) of every setting."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Mapping, Sequence, TypeVar

from agiqa_lib.core.config import DEVICE_HELP, StudyConfig
from agiqa_lib.data.datasets import DATASET_NAMES

C = TypeVar("C", bound=StudyConfig)


def add_dataset_arguments(parser: argparse.ArgumentParser, profiles: Sequence[str] | None = None,
                          default_profile: str = "lite", limit: str | None = None) -> None:
    """The options every per-dataset command shares: dataset, --root, and (when `profiles` is
    given) --profile, --device and, with `limit` (its help text), --limit."""
    parser.add_argument("dataset", help=f"dataset name ({', '.join(DATASET_NAMES)})")
    parser.add_argument("--root", default=None, help="dataset folder (not needed for demo)")
    if profiles is None:
        return
    parser.add_argument("--profile", default=default_profile, choices=tuple(profiles),
                        help=f"weight profile (default {default_profile})")
    parser.add_argument("--device", default="cpu", help=f"torch device: {DEVICE_HELP} "
                                                        "(default cpu)")
    if limit is not None:
        parser.add_argument("--limit", type=int, default=None, help=limit)


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type[StudyConfig],
                         positional: Sequence[str] = ("dataset",),
                         aliases: Mapping[str, Sequence[str]] | None = None) -> None:
    """One option per field of `config_cls` (`--n-aug-views` for `n_aug_views`).

    Fields in `positional` become positional arguments; `aliases` adds extra spellings
    (`{"results_path": ["--results"]}`) so older command lines keep working. Booleans
    become `--flag` (default False) or `--no-flag` (default True); tuple fields take one
    or more values.
    """
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = "" if "default" in help_text else f" (default: {_show(default)})"
        kwargs: dict[str, Any] = {"help": help_text + shown}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if f.name in positional:
            parser.add_argument(f.name, **kwargs)
            continue
        flag = "--" + f.name.replace("_", "-")
        names = [flag, *(aliases or {}).get(f.name, ())]
        kind = hints[f.name]
        if kind is bool:
            if default:
                parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name,
                                    action="store_false", help=f"do not {help_text}")
            else:
                parser.add_argument(*names, dest=f.name, action="store_true", help=help_text)
            continue
        scalar = _scalar_type(kind)
        if _is_tuple(kind):
            kwargs["nargs"] = "+"
        parser.add_argument(*names, dest=f.name, type=scalar, default=default, **kwargs)


def config_from_args(config_cls: type[C], args: argparse.Namespace) -> C:
    """The config built from parsed arguments (only the config's own fields are read)."""
    return config_cls.from_mapping(vars(args))


def _scalar_type(kind: Any) -> type:
    """int, float or str from an annotation such as `int | None` or `tuple[int, ...]`."""
    args = typing.get_args(kind)
    if args:  # Optional[...], X | None, tuple[X, ...]
        return _scalar_type(next(a for a in args if a not in (type(None), Ellipsis)))
    return kind if kind in (int, float, str) else str


def _is_tuple(kind: Any) -> bool:
    """Whether an annotation is (optionally) a tuple."""
    return typing.get_origin(kind) is tuple or any(_is_tuple(a) for a in typing.get_args(kind))


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)
