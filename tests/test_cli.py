"""cli.run maps errors by type: a UserError (any wing's) is one line and exit status 2; anything
else, whatever its name, is a bug and keeps its traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from demos.package import PackageError
from going_modular.data_setup import DataError
from going_modular.deploy import cli
from going_modular.deploy.batch.job import BatchError
from going_modular.deploy.bundle import BundleError
from going_modular.deploy.errors import UsageError, UserError
from going_modular.deploy.image import InvalidImageError
from going_modular.deploy.stream.runtime import StreamError
from going_modular.model_builder import WeightsUnavailableError
from going_modular.utils import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


def fail(error: BaseException):
    def main():
        raise error
    return main


@pytest.mark.parametrize("error", [BundleError, InvalidImageError, BatchError, StreamError, DataError,
                                   CheckpointError, WeightsUnavailableError, PackageError, UsageError])
def test_every_user_error_is_one_line_and_status_2(error, capsys):
    assert issubclass(error, UserError)
    assert cli.run(fail(error("the file  is\nmissing"))) == cli.EXIT_USAGE
    assert capsys.readouterr().err == "error: the file is missing\n"


def test_other_errors_keep_their_traceback_whatever_their_name():
    class DataError(RuntimeError):  # the name of a user error, but not one
        pass

    for error in (DataError("bug"), ValueError("bug"), OSError("bug"), KeyError("bug")):
        with pytest.raises(type(error)):
            cli.run(fail(error))


def test_ctrl_c_is_130_without_traceback(capsys):
    assert cli.run(fail(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "\ninterrupted\n"
    assert cli.run(lambda: None) == 0 and cli.run(lambda: 3) == 3


@pytest.mark.parametrize("command", [["going_modular.deploy.batch_predict", "--input", "nowhere", "--output", "o.csv"],
                                     ["going_modular.deploy.stream", "--source", "nowhere"],
                                     ["going_modular.deploy.serve", "--model", "nowhere.onnx", "--port", "1"],
                                     ["going_modular.deploy.batch", "--input", "x", "--output", "o.csv",
                                      "--actors", "0"]])
def test_the_old_and_new_commands_answer_bad_input_in_one_line(command, tmp_path):
    proc = subprocess.run([sys.executable, "-m", *command], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
