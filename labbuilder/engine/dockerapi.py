"""Docker's API at its edges: its errors said as one sentence about the lab (EngineError, with
Docker's own words kept for --debug), and the tar archives its copy calls take. The errors come
from engine/dockerhttp.py, or from the Docker SDK where it is used (and only then imported)."""

from __future__ import annotations

import io
import re
import sys
import tarfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import PurePosixPath

from labbuilder.engine.dockerhttp import APIError, NotFound, Unreachable
from labbuilder.errors import LabError

TIMEOUT = 120  # seconds one Docker API call may take


class EngineError(LabError):
    """A Docker API error, said as one sentence; `detail` keeps Docker's own words for --debug."""

    def __init__(self, message: str, hint: str = "", detail: str = "", status: int | None = None):
        super().__init__(message, hint)
        self.detail = detail
        self.status = status  # the engine's HTTP status, when it answered

    @property
    def missing(self) -> bool:
        """What the call was about does not exist (any more)."""
        return self.status == 404


def _explain(err: Exception) -> str:
    """Docker's explanation without its URL and status line."""
    text = getattr(err, "explanation", None) or str(err)
    text = re.sub(r"^\d{3} (Client|Server) Error for \S+: ", "", str(text))
    return text.strip().rstrip(".")


NO_ENGINE_HINT = "is dockerd running? `bash scripts/ensure-docker.sh` installs and starts it"
SLOW_HINT = "it may be overloaded (many labs starting at once?); try again, or look at its log"
BUSY_HINT = "another labbuilder command is working on this lab; wait for it, then try again"


@contextmanager
def docker_errors(what: str, hint: str = "") -> Iterator[None]:
    """Turn any Docker error raised inside into `EngineError("<what>: <why>")`."""
    try:
        yield
    except NotFound as err:
        raise EngineError(
            f"{what}: it no longer exists", hint or "another command removed it?", str(err), 404
        ) from None
    except APIError as err:
        hint = hint or (BUSY_HINT if err.status == 409 else "")
        raise EngineError(f"{what}: {err.explanation.rstrip('.')}", hint, str(err), err.status) from None
    except Unreachable as err:
        if err.timed_out:
            raise EngineError(
                f"{what}: the Docker engine did not answer within {TIMEOUT} s", SLOW_HINT, str(err)
            ) from None
        # The engine itself is away: that is the news, whatever the call was for.
        raise EngineError(f"cannot reach the Docker engine {err.engine}: {err}", err.hint, str(err)) from None
    except Exception as err:
        said = sdk_error(what, hint, err)
        if said is None:
            raise
        raise said from None


def sdk_error(what: str, hint: str, err: Exception) -> EngineError | None:
    """The Docker SDK's (and requests') errors, said the same way; None for any other error. The
    SDK is looked up, not imported: when it was never imported, it raised nothing."""
    errors, requests = sys.modules.get("docker.errors"), sys.modules.get("requests.exceptions")
    if errors is not None and isinstance(err, errors.NotFound):
        return EngineError(f"{what}: it no longer exists", hint or "another command removed it?", str(err), 404)
    if errors is not None and isinstance(err, errors.APIError):
        status = getattr(err, "status_code", None)
        hint = hint or (BUSY_HINT if status == 409 else "")
        return EngineError(f"{what}: {_explain(err)}", hint, str(err), status)
    if errors is not None and isinstance(err, errors.DockerException):
        return EngineError(f"{what}: cannot talk to the Docker engine ({_explain(err)})", NO_ENGINE_HINT, str(err))
    if requests is not None and isinstance(err, requests.Timeout):
        return EngineError(f"{what}: the Docker engine did not answer within {TIMEOUT} s", SLOW_HINT, str(err))
    if requests is not None and isinstance(err, requests.RequestException):
        return EngineError(f"{what}: lost the connection to the Docker engine", NO_ENGINE_HINT, str(err))
    return None


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
