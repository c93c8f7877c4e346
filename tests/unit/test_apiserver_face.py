"""The apiserver's face: the lab's PKI (pure, deterministic) and the podserver speaking TLS on a
controller's :6443, run here on 127.0.0.1 with the lab's own certificate."""

from __future__ import annotations

import dataclasses
import datetime
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from labbuilder.compile import kubelet, pki
from labbuilder.compile.ops import WriteFile
from labbuilder.compile.plan import compile_plan
from labbuilder.spec.load import load, load_text
from labbuilder.spec.resolve import build_model

ROOT = Path(__file__).resolve().parents[2]
PODSERVER = ROOT / "templates" / "node" / "podserver.py"
KTHW = build_model(load("kthw")).lab


def sans(pem: str) -> tuple[list[str], list[str]]:
    ext = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return [str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress)], ext.value.get_values_for_type(
        x509.DNSName
    )


# -- pki ------------------------------------------------------------------------------------------
def test_the_kubernetes_certificate_names_what_kthw_names():
    ips, names = sans(pki.lab_pki(KTHW).cert)
    assert ips == ["10.32.0.1", "10.240.0.10", "10.240.0.11", "10.240.0.12", "127.0.0.1"]
    assert names == [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster",
        "kubernetes.svc.cluster.local",
        "kubernetes.default.svc.cluster.local",
    ]
    cert = x509.load_pem_x509_certificate(pki.lab_pki(KTHW).cert.encode())
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert (
        cert.subject.rfc4514_string()
        == "CN=kubernetes,OU=Kubernetes The Hard Way,O=Kubernetes,ST=Oregon,L=Portland,C=US"
    )


def test_other_addressing_and_domain_follow_the_lab():
    text = (
        "name: t\ncluster: {serviceCIDR: 100.64.0.0/20, domain: lab.internal}\nnetwork: {cidr: 192.168.5.0/24}\n"
        "nodes: [{name: cp, role: controller, ip: 192.168.5.9}, {name: w}]\n"
    )
    lab = build_model(load_text(text, "lab.yaml")).lab
    ips, names = sans(pki.lab_pki(lab).cert)
    assert ips == ["100.64.0.1", "192.168.5.9", "127.0.0.1"]
    assert names[-1] == "kubernetes.default.svc.lab.internal" and "kubernetes.svc.cluster.local" in names


def test_same_spec_gives_byte_identical_pki_and_another_lab_another_ca():
    pki._issue.cache_clear()
    first = pki.lab_pki(KTHW)
    pki._issue.cache_clear()
    again = pki.lab_pki(build_model(load("kthw")).lab)
    assert first == again and first is not again
    other = pki.lab_pki(dataclasses.replace(KTHW, name="tlskthw"))
    assert other.ca != first.ca and other.key != first.key
    plans = [compile_plan(build_model(load("kthw")).lab) for _ in range(2)]
    assert plans[0].digest == plans[1].digest


def test_the_chain_verifies_with_cryptography():
    issued = pki.lab_pki(KTHW)
    ca = x509.load_pem_x509_certificate(issued.ca.encode())
    cert = x509.load_pem_x509_certificate(issued.cert.encode())
    cert.verify_directly_issued_by(ca)
    ca.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_before_utc == datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    assert cert.not_valid_after_utc.year == 2099 and 0 < cert.serial_number < 2**159


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI here")
def test_the_chain_verifies_with_openssl(tmp_path: Path):
    issued = pki.lab_pki(KTHW)
    for name, text in issued.files().items():
        (tmp_path / name).write_text(text)
    ca, cert = str(tmp_path / "ca.pem"), str(tmp_path / "kubernetes.pem")
    verify = subprocess.run(["openssl", "verify", "-CAfile", ca, cert], capture_output=True, text=True)
    assert verify.stdout.strip() == f"{cert}: OK", verify.stderr
    for host in ("kubernetes.default.svc.cluster.local", "kubernetes"):
        check = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-checkhost", host], capture_output=True)
        assert b"does match" in check.stdout
    check = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-checkip", "10.32.0.1"], capture_output=True)
    assert b"does match" in check.stdout
    # The key in kubernetes-key.pem is the certificate's.
    pub = subprocess.run(
        ["openssl", "pkey", "-in", str(tmp_path / "kubernetes-key.pem"), "-pubout"], capture_output=True
    )
    cert_pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"], capture_output=True)
    assert pub.stdout == cert_pub.stdout and pub.stdout


def test_every_node_holds_the_pki_at_kthws_paths_and_the_router_only_the_ca():
    plan = compile_plan(KTHW)
    issued = pki.lab_pki(KTHW)
    for node in KTHW.nodes:
        files = {op.path: op.content for op in plan.steps[node.name] if isinstance(op, WriteFile)}
        assert files["/var/lib/kubernetes/ca.pem"] == issued.ca
        assert files["/var/lib/kubernetes/kubernetes.pem"] == issued.cert
        assert files["/var/lib/kubernetes/kubernetes-key.pem"] == issued.key
        assert files["/run/secrets/kubernetes.io/serviceaccount/ca.crt"] == issued.ca  # = /var/run/secrets/…
    router = {op.path: op.content for op in plan.steps["router"] if isinstance(op, WriteFile)}
    assert router == {"/var/lib/kubernetes/ca.pem": issued.ca}


def test_the_version_follows_the_lab_file():
    lab = build_model(load_text("name: t\ncluster: {version: v1.30.4}\nnodes: [{name: a}]\n", "lab.yaml")).lab
    info = kubelet.apiserver_version(lab)
    assert (info["major"], info["minor"], info["gitVersion"]) == ("1", "30", "v1.30.4")
    assert list(info) == [
        "major",
        "minor",
        "gitVersion",
        "gitCommit",
        "gitTreeState",
        "buildDate",
        "goVersion",
        "compiler",
        "platform",
    ]
    assert len(info["gitCommit"]) == 40 and kubelet.apiserver_version(KTHW)["gitVersion"] == "v1.33.0"


# -- the podserver as the apiserver, on 127.0.0.1 -----------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, Path]]:
    """podserver with one TLS apiserver entry and one plain pod entry, as a node would run it."""
    folder = tmp_path_factory.mktemp("apiserver")
    for name, text in pki.lab_pki(KTHW).files().items():
        (folder / name).write_text(text)
    tls_port, plain_port = free_port(), free_port()
    config = [
        {
            "name": "controller-0",
            "ip": "127.0.0.1",
            "netns": None,
            "tcp": [tls_port],
            "tls": {"cert": str(folder / "kubernetes.pem"), "key": str(folder / "kubernetes-key.pem")},
            "apiserver": {"version": kubelet.apiserver_version(KTHW)},
        },
        {"name": "nginx-x", "ip": "127.0.0.1", "netns": None, "tcp": [plain_port]},
    ]
    (folder / "podserver.json").write_text(json.dumps(config))
    argv = [sys.executable, str(PODSERVER), "--config", str(folder / "podserver.json"), "--bind", "127.0.0.1"]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        listening = [server.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
        assert all("listening tcp" in line for line in listening), listening
        assert "(tls)" in listening[0] and "(tls)" not in listening[1]
        yield tls_port, plain_port, folder
    finally:
        server.terminate()
        server.wait(timeout=10)


def request(port: int, folder: Path, path: str, method: str = "GET", host: str = "127.0.0.1"):
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read(), conn.sock
    finally:
        conn.close()


def test_version_over_tls_verified_with_the_lab_ca(apiserver):
    port, _, folder = apiserver
    status, headers, body, _ = request(port, folder, "/version")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == kubelet.apiserver_version(KTHW)
    assert body.startswith(b'{\n  "major": "1",')  # indented, as kube-apiserver prints it
    # Not kube-apiserver's: which apiserver answered, and the client it saw (NAT made visible).
    assert headers["X-Labbuilder-Server"].startswith("pod=controller-0 ip=127.0.0.1 client=127.0.0.1:")


def test_alpn_offers_http11_only(apiserver):
    port, _, folder = apiserver
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    context.set_alpn_protocols(["h2", "http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with context.wrap_socket(raw, server_hostname="kubernetes.default.svc.cluster.local") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        assert tls.getpeercert()["subject"][-1] == (("commonName", "kubernetes"),)


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz"])
def test_health_endpoints_say_ok(apiserver, path):
    port, _, folder = apiserver
    status, _, body, _ = request(port, folder, path)
    assert (status, body) == (200, b"ok")
    status, _, body, _ = request(port, folder, f"{path}?verbose")
    assert status == 200 and body.endswith(f"{path[1:]} check passed\n".encode()) and b"[+]ping ok" in body


def test_anything_else_is_forbidden_to_anonymous_as_a_status(apiserver):
    port, _, folder = apiserver
    status, headers, body, _ = request(port, folder, "/api")
    assert status == 403 and headers["Content-Type"] == "application/json"
    assert body == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User '
        b'\\"system:anonymous\\" cannot get path \\"/api\\"","reason":"Forbidden","details":{},"code":403}\n'
    )
    status, _, body, _ = request(port, folder, "/api/v1/namespaces?limit=1", method="POST")
    assert status == 403 and json.loads(body)["message"] == (
        'forbidden: User "system:anonymous" cannot post path "/api/v1/namespaces"'
    )


def test_a_name_outside_the_certificate_fails_verification(apiserver):
    port, _, folder = apiserver
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(raw, server_hostname="nginx.default.svc.cluster.local")


def test_plain_http_on_the_tls_port_gets_gos_400(apiserver):
    port, _, _ = apiserver
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b"".join(iter(lambda: s.recv(4096), b""))
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"X-Labbuilder-Server: pod=controller-0 " in reply
    assert reply.endswith(b"Client sent an HTTP request to an HTTPS server.\n")


def test_a_port_probe_does_not_break_the_server_and_pods_stay_plain(apiserver):
    port, plain, folder = apiserver
    for _ in range(3):  # nc -z: connect and leave
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert request(port, folder, "/healthz")[:1] == (200,)
    conn = http.client.HTTPConnection("127.0.0.1", plain, timeout=5)
    conn.request("GET", "/")
    answer = conn.getresponse().read().decode()
    conn.close()
    assert answer.startswith("pod=nginx-x ip=127.0.0.1 client=127.0.0.1:")


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl here")
def test_curl_with_the_lab_ca_as_kthws_smoke_test(apiserver):
    port, _, folder = apiserver
    ca = str(folder / "ca.pem")
    out = subprocess.run(
        ["curl", "-sS", "--cacert", ca, f"https://127.0.0.1:{port}/version"], capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 0 and json.loads(out.stdout)["gitVersion"] == "v1.33.0", out.stderr
    code = subprocess.run(
        ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"https://127.0.0.1:{port}/api"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert code.stdout == "403"
    resolved = subprocess.run(
        ["curl", "-sS", "--cacert", ca, "--resolve", f"kubernetes.default.svc.cluster.local:{port}:127.0.0.1",
         f"https://kubernetes.default.svc.cluster.local:{port}/healthz"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert resolved.stdout == "ok", resolved.stderr


def test_pki_command_writes_what_the_nodes_hold(tmp_path: Path):
    from click.testing import CliRunner

    from labbuilder.cli.main import main

    out = tmp_path / "pki"
    result = CliRunner().invoke(main, ["pki", str(ROOT / "labs" / "kthw.yaml"), "--name", "tlskthw", "--out", str(out)])
    assert result.exit_code == 0, result.output
    issued = pki.lab_pki(dataclasses.replace(KTHW, name="tlskthw"))
    assert {p.name: p.read_text() for p in out.iterdir()} == issued.files()
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {
        "ca.pem": "0o644",
        "ca-key.pem": "0o600",
        "kubernetes.pem": "0o644",
        "kubernetes-key.pem": "0o600",
    }
    plan = compile_plan(build_model(load("kthw")).lab)
    files = {op.path: op.content for op in plan.steps["controller-0"] if isinstance(op, WriteFile)}
    shipped = CliRunner().invoke(main, ["pki", str(ROOT / "labs" / "kthw.yaml"), "--out", str(tmp_path / "shipped")])
    assert shipped.exit_code == 0, shipped.output
    assert (tmp_path / "shipped" / "kubernetes.pem").read_text() == files["/var/lib/kubernetes/kubernetes.pem"]
