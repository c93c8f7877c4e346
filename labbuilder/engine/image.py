"""The node image: Debian bookworm with the network tools, `/pause` and the pod server.

`/pause` is templates/node/pause.x86_64 (written by pause.py there: a ≈36 KB sandbox process where
a copy of `sleep` took ≈140 KB per pod); on other machines, a copy of coreutils `sleep`.

Two ways to build the same contents (recipe files in templates/node/):
- "mmdebstrap" (default, needs no registry): `mmdebstrap --variant=minbase bookworm` writes a
  root filesystem tarball, which is imported with the Docker import API (`docker import`).
  Needs root (or a user namespace setup) and a Debian mirror (LABBUILDER_DEBIAN_MIRROR overrides
  deb.debian.org; the value is an mmdebstrap MIRROR argument: a URL or a "deb ..." line).
- "dockerfile": `docker build` of templates/node/Dockerfile, FROM debian:bookworm-slim.

The tag is `labbuilder/node:<12 hex>`, a sha256 of the recipe, so changing the recipe changes the
tag and an existing image is reused as long as the recipe is unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from labbuilder.errors import LabError
from labbuilder.resources import templates_dir

if TYPE_CHECKING:
    import docker

IMAGE_REPO = "labbuilder/node"
IMAGE_LABEL = "labbuilder.image"  # value "node"
RECIPE_LABEL = "labbuilder.recipe"  # value: the full recipe digest
RECIPE_VERSION = "1"  # bump to force a rebuild when something outside the hashed files changes
SUITE = "bookworm"
BUILD_TIMEOUT = 900  # seconds, for either build method
LOG_TAIL = 25  # lines of build log quoted in an error

# Left out of the mmdebstrap image to keep it small (copyright files stay).
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
IMPORT_CHANGES = (
    'CMD ["/pause", "infinity"]',
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    f"LABEL {IMAGE_LABEL}=node",
)

# Files of templates/node/ installed as programs (both build paths): the pod server, the node's
# main process that starts what labbuilder hands it (agent.sh; see compile/kubelet.py), and the
# pods' sandbox process (replaced by a copy of `sleep` where the machine is not x86-64).
PROGRAMS = {
    "podserver.py": "/usr/local/bin/podserver",
    "agent.sh": "/usr/local/bin/labbuilder-agent",
    "pause.x86_64": "/pause",
}

BuildMethod = Literal["auto", "mmdebstrap", "dockerfile"]
Progress = Callable[[str], None]


def _no_progress(_: str) -> None:
    pass


def template_dir() -> Path:
    """templates/node: inside the installed package (wheel) or at the repo top (editable/source)."""
    try:
        folder = templates_dir() / "node"
    except FileNotFoundError:
        folder = None
    if folder is None or not (folder / "Dockerfile").is_file():
        raise LabError("the node image recipe (templates/node/) is missing", hint="reinstall labbuilder")
    return folder


def parse_packages(text: str) -> tuple[str, ...]:
    """One package a line; '#' starts a comment."""
    return tuple(word for line in text.splitlines() for word in line.split("#", 1)[0].split())


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the image contents; its digest names the image."""

    packages: tuple[str, ...]
    podserver: str
    agent: str
    dockerfile: str
    pause: str  # pause.x86_64, in hex
    version: str = RECIPE_VERSION
    suite: str = SUITE
    dpkg_options: tuple[str, ...] = DPKG_OPTIONS
    import_changes: tuple[str, ...] = IMPORT_CHANGES

    def digest(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def tag(self) -> str:
        return f"{IMAGE_REPO}:{self.digest()[:12]}"


@cache
def load_recipe() -> Recipe:
    folder = template_dir()
    return Recipe(
        packages=parse_packages((folder / "packages.txt").read_text()),
        podserver=(folder / "podserver.py").read_text(),
        agent=(folder / "agent.sh").read_text(),
        dockerfile=(folder / "Dockerfile").read_text(),
        pause=(folder / "pause.x86_64").read_bytes().hex(),
    )


def image_tag() -> str:
    """`labbuilder/node:<first 12 hex of the recipe digest>`."""
    return load_recipe().tag()


def image_exists(client: docker.DockerClient, tag: str | None = None) -> bool:
    import docker.errors  # the SDK, only where images are built

    try:
        client.images.get(tag or image_tag())
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_image(client: docker.DockerClient, on_progress: Progress = _no_progress) -> str:
    """The tag of the node image, built first when it is missing."""
    tag = image_tag()
    if image_exists(client, tag):
        return tag
    return build_image(client, on_progress=on_progress)


def build_image(client: docker.DockerClient, method: BuildMethod = "auto", on_progress: Progress = _no_progress) -> str:
    """Build the node image (even when it exists) and return its tag; raises LabError on failure."""
    if method == "auto":
        method = "mmdebstrap" if shutil.which("mmdebstrap") else "dockerfile"
    recipe = load_recipe()
    started = time.monotonic()
    if method == "mmdebstrap":
        _build_mmdebstrap(client, recipe, on_progress)
    elif method == "dockerfile":
        _build_dockerfile(client, recipe, on_progress)
    else:
        raise LabError(f"unknown image build method {method!r}", hint="use auto, mmdebstrap or dockerfile")
    on_progress(f"built {recipe.tag()} in {time.monotonic() - started:.0f} s")
    return recipe.tag()


def mmdebstrap_command(recipe: Recipe, target: str, staged: str) -> list[str]:
    """The mmdebstrap command line writing the root filesystem tarball to `target`; the
    PROGRAMS are uploaded from folder `staged`."""
    cmd = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(recipe.packages)]
    cmd += [f"--dpkgopt={option}" for option in recipe.dpkg_options]
    cmd += [f"--customize-hook=upload {staged}/{source} {path}" for source, path in PROGRAMS.items()]
    modes = " ".join(f'"$1{path}"' for path in PROGRAMS.values())
    cmd += [
        f'--customize-hook=chmod 0755 {modes} && {{ [ "$(uname -m)" = x86_64 ] || cp "$1/usr/bin/sleep" "$1/pause"; }}',
        recipe.suite,
        target,
    ]
    mirror = os.environ.get("LABBUILDER_DEBIAN_MIRROR", "").strip()
    return [*cmd, mirror] if mirror else cmd


# mmdebstrap stages worth showing ("I: downloading packages with apt..." and so on)
_MMDEBSTRAP_STAGES = (
    "running apt-get update",
    "downloading packages",
    "extracting archives",
    "installing essential packages",
    "installing remaining packages",
    "creating tarball",
)


def _build_mmdebstrap(client: docker.DockerClient, recipe: Recipe, on_progress: Progress) -> None:
    import docker.errors

    if not shutil.which("mmdebstrap"):
        raise LabError(
            "mmdebstrap is not installed",
            hint="run scripts/ensure-docker.sh (apt-get install mmdebstrap) or use the dockerfile method",
        )
    with tempfile.TemporaryDirectory(prefix="labbuilder-image-") as tmp:
        # upload's paths are split on blanks: stage the programs under blank-free names
        if " " in tmp:
            raise LabError(f"temporary directory {tmp!r} contains a blank", hint="set TMPDIR")
        for source in PROGRAMS:
            shutil.copy(template_dir() / source, Path(tmp) / source)
        rootfs = str(Path(tmp) / "rootfs.tar")
        on_progress(f"debootstrapping {recipe.suite} with mmdebstrap (about 30 s)")
        code, log = _run_logged(mmdebstrap_command(recipe, rootfs, tmp), on_progress)
        if code != 0:
            raise LabError(
                f"building the node image with mmdebstrap failed (exit {code}):\n{_tail(log)}",
                hint="mmdebstrap needs root and a reachable Debian mirror (LABBUILDER_DEBIAN_MIRROR); "
                f"full log: {_save_log(log)}",
            )
        size = Path(rootfs).stat().st_size
        on_progress(f"importing into docker ({size / 1e6:.0f} MB)")
        changes = [*recipe.import_changes, f"LABEL {RECIPE_LABEL}={recipe.digest()}"]
        repository, tag = recipe.tag().split(":")
        try:
            result = client.api.import_image(src=rootfs, repository=repository, tag=tag, changes=changes)
        except docker.errors.DockerException as e:
            raise LabError(f"docker import of the node image failed: {e}") from e
        errors = [m["error"] for m in _json_lines(str(result)) if m.get("error")]
        if errors or not image_exists(client, recipe.tag()):
            raise LabError(f"docker import of the node image failed: {' '.join(errors) or result!s:.2000}")


def _json_lines(text: str) -> list[dict[str, Any]]:
    """The import API answers with JSON messages, one a line."""
    messages = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict):
                messages.append(message)
    return messages


def _run_logged(cmd: list[str], on_progress: Progress) -> tuple[int, list[str]]:
    """Run cmd with stdout+stderr captured line by line; forward mmdebstrap stages; kill on timeout."""
    log: list[str] = [" ".join(cmd)]
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as e:
        return 127, [*log, str(e)]
    timer = threading.Timer(BUILD_TIMEOUT, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            log.append(line)
            if line.startswith("I: ") and line[3:].startswith(_MMDEBSTRAP_STAGES):
                on_progress(line[3:].rstrip("."))
        code = proc.wait()
    finally:
        timer.cancel()
    if code == -9:
        log.append(f"killed after {BUILD_TIMEOUT} s")
    return code, log


def _build_dockerfile(client: docker.DockerClient, recipe: Recipe, on_progress: Progress) -> None:
    import docker.errors

    on_progress("docker build of templates/node/Dockerfile (FROM debian:bookworm-slim)")
    log: list[str] = []
    error = ""
    try:
        chunks: Iterable[dict[str, Any]] = client.api.build(
            path=str(template_dir()),
            tag=recipe.tag(),
            labels={IMAGE_LABEL: "node", RECIPE_LABEL: recipe.digest()},
            rm=True,
            forcerm=True,
            decode=True,
            timeout=BUILD_TIMEOUT,
        )
        for chunk in chunks:
            for line in str(chunk.get("stream", "")).splitlines():
                log.append(line)
                if line.startswith("Step "):
                    on_progress(line)
            if "error" in chunk:
                error = str(chunk.get("error", "")).strip()
                log.append(error)
    except docker.errors.DockerException as e:
        error = str(e)
        log.append(error)
    if error or not image_exists(client, recipe.tag()):
        raise LabError(
            f"docker build of the node image failed: {error or 'no image produced'}\n{_tail(log)}",
            hint="this path needs a registry for debian:bookworm-slim; without one use mmdebstrap "
            f"(scripts/ensure-docker.sh installs it); full log: {_save_log(log)}",
        )


def _tail(log: list[str]) -> str:
    return "\n".join(deque((line for line in log if line.strip()), maxlen=LOG_TAIL))


def _save_log(log: list[str]) -> str:
    path = Path(tempfile.gettempdir()) / "labbuilder-node-image-build.log"
    with contextlib.suppress(OSError):
        path.write_text("\n".join(log) + "\n")
    return str(path)
