"""The Docker runtime: lab containers found by their labels, created sealed, entered by exec.

Every container labbuilder creates carries `labbuilder.lab=<lab>`; that label is how `down`,
`status` and `ls` find a lab without its file, and all they ever touch.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import docker
import docker.errors
from docker.models.containers import Container

from labbuilder.errors import LabError
from labbuilder.plan import ContainerSpec

LABEL_LAB = "labbuilder.lab"
LABEL_NODE = "labbuilder.node"
LABEL_ROLE = "labbuilder.role"
LABEL_SPEC = "labbuilder.spec-hash"
CAPS = ["NET_ADMIN", "SYS_ADMIN", "NET_RAW"]


@dataclass(frozen=True)
class ExecResult:
    code: int
    output: str


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as err:
        raise LabError(
            f"cannot reach the Docker engine: {err}",
            hint="start it with `bash scripts/ensure-docker.sh` (installs and starts dockerd)",
        ) from None
    return client


class DockerRuntime:
    def __init__(self, client: docker.DockerClient | None = None):
        self.client = client or connect()

    # -- finding ---------------------------------------------------------------------------
    def lab_containers(self, lab: str) -> list[Container]:
        return list(self.client.containers.list(all=True, filters={"label": f"{LABEL_LAB}={lab}"}))

    def all_lab_containers(self) -> list[Container]:
        return list(self.client.containers.list(all=True, filters={"label": LABEL_LAB}))

    # -- creating --------------------------------------------------------------------------
    def create(self, spec: ContainerSpec, lab: str, image: str, spec_hash: str) -> Container:
        """A sealed node: no network, three explicit capabilities, never privileged."""
        labels = {LABEL_LAB: lab, LABEL_NODE: spec.key, LABEL_ROLE: spec.role, LABEL_SPEC: spec_hash}
        try:
            return self.client.containers.run(
                image,
                ["sleep", "infinity"],
                name=spec.name,
                hostname=spec.hostname,
                labels=labels,
                network_mode="none",
                cap_add=CAPS,
                sysctls=spec.sysctls,
                init=True,
                detach=True,
                stop_signal="SIGKILL",
            )
        except docker.errors.APIError as err:
            raise LabError(f"cannot create container {spec.name}: {err.explanation or err}") from None

    def pid(self, container: Container) -> int:
        container.reload()
        pid = int(container.attrs["State"]["Pid"])
        if not pid:
            raise LabError(
                f"container {container.name} is not running",
                hint=f"`docker logs {container.name}`, then `labbuilder down` and `up` again",
            )
        return pid

    # -- inside ----------------------------------------------------------------------------
    def exec(self, container: Container, argv: Sequence[str], detach: bool = False) -> ExecResult:
        code, output = container.exec_run(list(argv), detach=detach)
        text = output.decode(errors="replace") if isinstance(output, bytes) else ""
        return ExecResult(code or 0, text)

    def run(self, container: Container, argv: Sequence[str]) -> str:
        """exec and fail loudly: an unexpected failure inside a node is a bug worth seeing."""
        result = self.exec(container, argv)
        if result.code != 0:
            raise LabError(f"{container.name}: `{' '.join(argv)}` failed ({result.code}): {result.output.strip()}")
        return result.output

    def put_files(self, container: Container, files: dict[str, str]) -> None:
        """Write files (path → text) in one tar archive extracted at /, parent folders included: one round trip."""
        buffer = io.BytesIO()
        now = int(time.time())
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            folders = sorted({str(p) for path in files for p in PurePosixPath(path).parents if str(p) != "/"})
            for folder in folders:
                info = tarfile.TarInfo(folder.lstrip("/"))
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
                tar.addfile(info)
            for path, content in files.items():
                data = content.encode()
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode, info.mtime = len(data), 0o644, now
                tar.addfile(info, io.BytesIO(data))
        if not container.put_archive("/", buffer.getvalue()):
            raise LabError(f"{container.name}: could not write {', '.join(files)}")

    # -- removing --------------------------------------------------------------------------
    def remove_lab(self, lab: str) -> list[str]:
        """Remove every container labelled with this lab, and only those."""
        removed = []
        for container in self.lab_containers(lab):
            with contextlib.suppress(docker.errors.NotFound):  # already gone: another down raced us
                container.remove(force=True)
            removed.append(container.name)
        return sorted(removed)
