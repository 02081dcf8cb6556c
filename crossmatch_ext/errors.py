"""Exceptions for mistakes in the user's input, and a console hook that shows them as the last lines printed.

A bundle config is evaluated by MONAI: an exception raised inside a ``$`` expression is wrapped in
``RuntimeError: Failed to evaluate ConfigExpression: ...`` and Python prints the whole chain, so the sentence the
user needs ends up in the middle of a long traceback. The package raises :class:`InputError` (or one of its
subclasses) for bad data, bad settings and unusable output folders, and :func:`install_error_hook` (installed when
``crossmatch_ext.bundle`` is imported, which every bundle config does) prints such an error as two short lines at the
very end::

    crossmatch: error in config key 'datalists' (run with CROSSMATCH_TRACEBACK=1 for the traceback)
    dataset_dir not found: /nonexistent. Set --dataset_dir to the folder that holds the data (...)

Any other uncaught exception is printed as Python would, followed by one line naming the config key whose
evaluation failed and the root cause, so that the last line is still the useful one.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from types import TracebackType
from typing import Any

__all__ = [
    "InputError",
    "InputFileNotFoundError",
    "InputValueError",
    "SettingError",
    "find_input_error",
    "format_input_error",
    "install_error_hook",
]

TRACEBACK_ENV = "CROSSMATCH_TRACEBACK"


class InputError(Exception):
    """A mistake in the user's data, settings or environment (not a bug); its message says what to do."""


class InputValueError(InputError, ValueError):
    """Bad data or a bad value (also a ``ValueError``)."""


class InputFileNotFoundError(InputError, FileNotFoundError):
    """A file or folder named by the user or by a split list does not exist (also a ``FileNotFoundError``)."""


class SettingError(InputError, TypeError, ValueError):
    """A config setting of the wrong type or out of range (also a ``TypeError`` and a ``ValueError``)."""


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return seen


def find_input_error(error: BaseException) -> InputError | None:
    """The first :class:`InputError` in the cause / context chain of ``error`` (``error`` itself included).

    Args:
        error: an exception.

    Returns:
        The input error, or None.
    """
    for item in _chain(error):
        if isinstance(item, InputError):
            return item
    return None


def _config_key(tb: TracebackType | None) -> str | None:
    """Id of the innermost MONAI config item being evaluated in a traceback."""
    module = sys.modules.get("monai.bundle.config_item")
    item_type = getattr(module, "ConfigItem", None)
    if item_type is None:
        return None
    key = None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, item_type):  # never getattr on other objects: a ConfigParser evaluates on access
            item_id = candidate.get_id()
            if isinstance(item_id, str) and item_id:
                key = item_id
        tb = tb.tb_next
    return key


def _failed_key(error: BaseException) -> str | None:
    key = None
    for item in _chain(error):
        found = _config_key(item.__traceback__)
        if found:
            key = found
    return key


def format_input_error(error: BaseException) -> str | None:
    """The two lines shown for an uncaught exception caused by an :class:`InputError` (None for other errors).

    Args:
        error: the uncaught exception.

    Returns:
        The text, ending with the input error's message, or None.
    """
    cause = find_input_error(error)
    if cause is None:
        return None
    key = _failed_key(error)
    where = f" in config key {key!r}" if key else ""
    return (f"crossmatch: error{where} (run with {TRACEBACK_ENV}=1 for the traceback)\n"
            f"{type(cause).__name__}: {cause}")


_previous_hook: Any = None


def _close_progress_bars() -> None:
    """Close live tqdm bars now: left open, they print themselves again at exit, after the error message."""
    tqdm_module = sys.modules.get("tqdm.std")
    bar_type = getattr(tqdm_module, "tqdm", None)
    for bar in list(getattr(bar_type, "_instances", None) or []):
        with contextlib.suppress(Exception):  # a bar that cannot close must not hide the error
            bar.close()


def _hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    previous = _previous_hook or sys.__excepthook__
    try:
        _close_progress_bars()
        text = format_input_error(error)
        if text is not None and not os.environ.get(TRACEBACK_ENV):
            sys.stderr.flush()
            print(text, file=sys.stderr, flush=True)
            return
        previous(kind, error, tb)
        chain = _chain(error)
        key = _failed_key(error)
        if key is not None and len(chain) > 1:
            root = chain[-1]
            message = "".join(traceback.format_exception_only(type(root), root)).strip().splitlines()
            print(f"crossmatch: config key {key!r} failed: {message[-1] if message else type(root).__name__}",
                  file=sys.stderr, flush=True)
    except Exception:
        sys.__excepthook__(kind, error, tb)


def install_error_hook() -> None:
    """Install the console hook (idempotent; chains to the hook that was installed before)."""
    global _previous_hook
    if sys.excepthook is _hook:
        return
    _previous_hook = sys.excepthook
    sys.excepthook = _hook
