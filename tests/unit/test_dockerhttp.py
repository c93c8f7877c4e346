"""engine/dockerhttp: the hand-written Docker API client's framing and error handling, against a
small HTTP server on a unix socket (the real engine is exercised by every integration test)."""

from __future__ import annotations

import json
import socketserver
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest

from labbuilder.engine.dockerapi import EngineError, docker_errors
from labbuilder.engine.dockerhttp import APIError, DockerHTTP, NotFound, Unreachable, demultiplex, error_message


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def test_demultiplex_joins_stdout_and_stderr_in_order():
    stream = frame(1, b"out one\n") + frame(2, b"err\n") + frame(1, b"out two\n")
    assert demultiplex(stream) == b"out one\nerr\nout two\n"
    assert demultiplex(b"") == b""
    assert demultiplex(frame(1, b"whole") + b"\x01\x00\x00") == b"whole"  # a torn header is dropped


def test_error_message_is_the_engines_own_words():
    assert error_message(b'{"message":"No such container: x"}') == "No such container: x"
    assert error_message(b"page not found\n") == "page not found"
    assert error_message(b"") == "no explanation"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as dockerd
    served: ClassVar[list[str]] = []

    def address_string(self) -> str:  # a unix socket has no (host, port)
        return "unix"

    def log_message(self, *args: object) -> None:
        pass

    def answer(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.served.append(self.path)
        if self.path.startswith("/containers/gone/json"):
            self.answer(404, {"message": "No such container: gone"})
        elif self.path.startswith("/containers/json"):
            self.answer(200, [{"Id": "abc", "Names": ["/lab-router"], "Labels": {"labbuilder.lab": "lab"}}])
        elif self.path == "/close-after":
            self.answer(200, {})
            self.close_connection = True
        else:
            self.answer(200, {"Version": "20.10.24"})

    def do_DELETE(self) -> None:
        self.served.append(self.path)
        self.answer(409, {"message": "removal of container abc is already in progress"})


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[DockerHTTP, type[Handler]]]:
    path = tmp_path / "docker.sock"
    server = UnixHTTPServer(str(path), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Handler.served = []
    yield DockerHTTP(f"unix://{path}", name="test", hint="start it"), Handler
    server.shutdown()
    server.server_close()


def test_calls_and_answers(engine):
    api, handler = engine
    assert api.version()["Version"] == "20.10.24"
    listed = api.containers("labbuilder.lab=lab")
    assert listed[0]["Names"] == ["/lab-router"]
    assert "filters=%7B%22label%22%3A+%5B%22labbuilder.lab%3Dlab%22%5D%7D" in handler.served[-1]


def test_error_statuses_keep_the_engines_words(engine):
    api, _ = engine
    with pytest.raises(NotFound) as gone:
        api.inspect("gone")
    assert gone.value.status == 404 and gone.value.explanation == "No such container: gone"
    with pytest.raises(APIError) as busy:
        api.remove("abc")
    assert busy.value.status == 409 and not isinstance(busy.value, NotFound)
    with pytest.raises(EngineError) as said, docker_errors("lab x: cannot remove x-router"):
        api.remove("abc")
    assert str(said.value).startswith("lab x: cannot remove x-router: removal of container abc is already in progress")
    assert said.value.status == 409 and not said.value.missing


def test_a_connection_the_engine_closed_is_opened_again(engine):
    api, handler = engine
    api.request("GET", "/close-after")  # the server closes after answering: not kept
    api.version()
    api.version()  # on the kept connection
    assert handler.served == ["/close-after", "/version", "/version"]


def test_no_engine_is_one_sentence_naming_it(tmp_path: Path):
    api = DockerHTTP(f"unix://{tmp_path}/missing.sock", name="second", hint="is it running?")
    with pytest.raises(Unreachable) as away:
        api.version()
    assert away.value.engine == "second" and not away.value.timed_out
    with pytest.raises(EngineError) as said, docker_errors("cannot list the lab containers"):
        api.containers("labbuilder.lab")
    assert str(said.value).startswith("cannot reach the Docker engine second: [Errno 2]")
    assert said.value.hint == "is it running?"
