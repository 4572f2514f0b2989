"""The command line: dispatch, help, and one-line errors without tracebacks."""

import subprocess
import sys

import pytest

import mtlkit
from mtlkit import cli
from mtlkit.errors import MtlkitError


def test_console_entry_point_and_module_agree():
    result = subprocess.run([sys.executable, "-m", "mtlkit", "--version"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == f"mtlkit {mtlkit.__version__}"


def test_help_lists_every_command(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for command in ("train", "eval", "detect", "ablate", "bench", "plugins", "data"):
        assert command in out


class _Boom:
    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--kind", default="user")

    @staticmethod
    def main(args):
        if args.kind == "user":
            raise MtlkitError("data.train.root: folder not found: /nope")
        raise RuntimeError("a bug")


@pytest.fixture
def boom_command(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "plugins", ("unused", "test"))
    monkeypatch.setattr(cli, "_command_module", lambda name: _Boom if name == "plugins"
                        else cli.importlib.import_module(cli.COMMANDS[name][0]))


def test_user_error_is_one_line_with_exit_2(boom_command, capsys):
    assert cli.main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert err == "error: data.train.root: folder not found: /nope\n"


def test_debug_flag_shows_the_traceback(boom_command, capsys):
    assert cli.main(["plugins", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("error: data.train.root: folder not found: /nope\n")


def test_internal_error_is_reported_without_traceback(boom_command, capsys):
    assert cli.main(["plugins", "--kind", "bug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "internal error: RuntimeError: a bug" in err and "--debug" in err


def test_unknown_command_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["trian"])
    assert info.value.code == 2
    assert "invalid choice: 'trian'" in capsys.readouterr().err


def test_bench_refuses_unknown_suite(capsys):
    assert cli.main(["bench", "opz"]) == 2
    assert "unknown benchmark suite 'opz'" in capsys.readouterr().err


REPO = __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__)))


@pytest.mark.parametrize("override, expected", [
    ("model.fusion=residul", "model.fusion: unknown fusion 'residul' (did you mean 'residual'?)"),
    ("model.fuson=residual", "unknown key 'model.fuson' (did you mean 'fusion'?)"),
    ("train.iters=many", "train.iters: expected an integer, got str 'many'"),
])
def test_train_refuses_bad_config_before_running(override, expected, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mtlkit", "train", "configs/synthetic/rock.yaml", "--out",
         str(tmp_path / "run"), "-o", override],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "last.pt").exists()
