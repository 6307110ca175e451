"""Stage entry points: a user error (any PcrError) exits 2 with one line; anything else is a bug and raises."""

import pytest

from pcr import stage
from pcr.errors import ConfigError, ModelError, PcrError, StoreError


@pytest.mark.parametrize("error", [ConfigError, ModelError, StoreError])
def test_user_errors_exit_2_with_one_line(error, capsys):
    def fail():
        raise error("model.path='x' is not a directory")

    with pytest.raises(SystemExit) as e:
        stage.run(fail)
    assert e.value.code == stage.EXIT_USER_ERROR == 2
    assert capsys.readouterr().err == "error: model.path='x' is not a directory\n"
    assert issubclass(error, PcrError)


@pytest.mark.parametrize("bug", [ValueError("a bare ValueError from a bug"), FileNotFoundError("a missing internal file"),
                                 KeyError("x")])
def test_other_errors_keep_their_traceback(bug):
    def fail():
        raise bug

    with pytest.raises(type(bug)):
        stage.run(fail)
