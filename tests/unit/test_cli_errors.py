"""How failures reach the user: a user error is one located line and exit 1; Docker's errors are
one sentence about the lab (no URL, no status line) with the raw text behind --debug; a bug is
said to be one, exit 70, with the traceback only behind --debug."""

from __future__ import annotations

import click
import docker.errors
import pytest
import requests
from click.testing import CliRunner

from labbuilder.cli.tools import EXIT_BUG, user_errors
from labbuilder.engine.runtime import EngineError, docker_errors
from labbuilder.errors import LabError


def command(error: BaseException) -> click.Command:
    @click.command()
    @user_errors
    def broken() -> None:
        raise error

    return broken


def test_a_user_error_is_one_line_and_exit_1():
    result = CliRunner().invoke(command(LabError("no lab named x on this host", hint="`labbuilder ls`")))
    assert result.exit_code == 1
    assert result.output == "error: no lab named x on this host (`labbuilder ls`)\n"


def test_a_bug_is_reported_as_one_with_exit_70_and_no_traceback(monkeypatch):
    monkeypatch.delenv("LABBUILDER_DEBUG", raising=False)
    result = CliRunner().invoke(command(KeyError("worker-9")))
    assert result.exit_code == EXIT_BUG == 70
    assert "internal error: KeyError: 'worker-9'" in result.output and "This is a bug" in result.output
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback_of_a_bug(monkeypatch):
    monkeypatch.setenv("LABBUILDER_DEBUG", "1")
    result = CliRunner().invoke(command(KeyError("worker-9")))
    assert result.exit_code == 70 and "Traceback" in result.output


def api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    response.url = "http+docker://localhost/v1.41/containers/abc?force=True"
    return docker.errors.APIError(f"{status} Client Error", response=response, explanation=explanation)


@pytest.mark.parametrize(
    ("raised", "said", "hint"),
    [
        (api_error(409, 'Conflict. The container name "/x-router" is already in use'), "Conflict", "another"),
        (docker.errors.NotFound("404 Client Error: Not Found", response=None), "no longer exists", "removed it"),
        (requests.exceptions.ReadTimeout("Read timed out. (read timeout=120)"), "did not answer within", "overloaded"),
        (requests.exceptions.ConnectionError("Connection aborted"), "lost the connection", "dockerd"),
        (docker.errors.DockerException("Error while fetching server API version"), "cannot talk", "ensure-docker"),
    ],
)
def test_docker_errors_become_one_sentence_about_the_lab(raised, said, hint, monkeypatch):
    monkeypatch.delenv("LABBUILDER_DEBUG", raising=False)
    with pytest.raises(EngineError) as caught, docker_errors("lab kthw: cannot create container kthw-router"):
        raise raised
    text = str(caught.value)
    assert text.startswith("lab kthw: cannot create container kthw-router: ") and said in text
    assert hint in caught.value.hint
    assert "http+docker" not in text and "Client Error" not in text and "\n" not in text
    result = CliRunner().invoke(command(caught.value))
    assert result.exit_code == 1 and result.output.count("\n") == 1  # one line; the raw text needs --debug
    monkeypatch.setenv("LABBUILDER_DEBUG", "1")
    assert "debug: " in CliRunner().invoke(command(caught.value)).output
