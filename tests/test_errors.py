"""The console hook: an input error is printed as two short lines; other errors keep their traceback and end with
the failed config key and the root cause."""

from __future__ import annotations

import sys

from monai.bundle import ConfigParser

from crossmatch_ext import errors
from crossmatch_ext.errors import InputValueError, format_input_error


def _raise_from_config(expression: str) -> BaseException:
    parser = ConfigParser({"imports": ["$import crossmatch_ext"], "datalists": expression})
    try:
        parser.get_parsed_content("datalists")
    except BaseException as e:
        return e
    raise AssertionError("expected an error")


def _bad() -> None:
    raise InputValueError("dataset_dir not found: /x. Set --dataset_dir.")


def test_input_error_is_printed_as_two_lines(capsys, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "_bad", _bad)
    error = _raise_from_config(f"$__import__('{__name__}')._bad()")
    assert isinstance(error, RuntimeError)  # what MONAI raises
    monkeypatch.delenv(errors.TRACEBACK_ENV, raising=False)
    errors._hook(type(error), error, error.__traceback__)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["crossmatch: error in config key 'datalists' (run with CROSSMATCH_TRACEBACK=1 for the traceback)",
                     "InputValueError: dataset_dir not found: /x. Set --dataset_dir."]
    assert format_input_error(ValueError("x")) is None


def test_other_errors_keep_the_traceback_and_end_with_the_root_cause(capsys, monkeypatch):
    monkeypatch.setenv(errors.TRACEBACK_ENV, "1")
    error = _raise_from_config("$1 / 0")
    errors._hook(type(error), error, error.__traceback__)
    err = capsys.readouterr().err.strip().splitlines()
    assert any(line.startswith("Traceback") for line in err)
    assert err[-1] == "crossmatch: config key 'datalists' failed: ZeroDivisionError: division by zero"


def test_install_is_idempotent():
    errors.install_error_hook()
    errors.install_error_hook()
    assert sys.excepthook is errors._hook and errors._previous_hook is not errors._hook
