"""Docker's API at its edges: its errors said as one sentence about the lab (EngineError, with
Docker's own words kept for --debug), and the tar archives its copy calls take."""

from __future__ import annotations

import io
import re
import tarfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import PurePosixPath

import docker.errors
import requests

from labbuilder.errors import LabError

TIMEOUT = 120  # seconds one Docker API call may take


class EngineError(LabError):
    """A Docker API error, said as one sentence; `detail` keeps Docker's own words for --debug."""

    def __init__(self, message: str, hint: str = "", detail: str = ""):
        super().__init__(message, hint)
        self.detail = detail


def _explain(err: docker.errors.DockerException) -> str:
    """Docker's explanation without its URL and status line."""
    text = getattr(err, "explanation", None) or str(err)
    text = re.sub(r"^\d{3} (Client|Server) Error for \S+: ", "", str(text))
    return text.strip().rstrip(".")


@contextmanager
def docker_errors(what: str, hint: str = "") -> Iterator[None]:
    """Turn any Docker error raised inside into `EngineError("<what>: <why>")`."""
    try:
        yield
    except docker.errors.NotFound as err:
        raise EngineError(f"{what}: it no longer exists", hint or "another command removed it?", str(err)) from None
    except docker.errors.APIError as err:
        status = getattr(err, "status_code", None)
        if status == 409:
            hint = hint or "another labbuilder command is working on this lab; wait for it, then try again"
        raise EngineError(f"{what}: {_explain(err)}", hint, str(err)) from None
    except docker.errors.DockerException as err:
        raise EngineError(
            f"{what}: cannot talk to the Docker engine ({_explain(err)})",
            "is dockerd running? `bash scripts/ensure-docker.sh` installs and starts it",
            str(err),
        ) from None
    except requests.exceptions.Timeout as err:
        raise EngineError(
            f"{what}: the Docker engine did not answer within {TIMEOUT} s",
            "it may be overloaded (many labs starting at once?); try again, or look at its log",
            str(err),
        ) from None
    except requests.exceptions.RequestException as err:
        raise EngineError(
            f"{what}: lost the connection to the Docker engine",
            "is dockerd running? `bash scripts/ensure-docker.sh` starts it",
            str(err),
        ) from None


def tar_of(files: Mapping[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folders = sorted({str(p) for path in files for p in PurePosixPath(path).parents if str(p) != "/"})
        for folder in folders:
            info = tarfile.TarInfo(folder.lstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
            tar.addfile(info)
        for path, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o644, now
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
