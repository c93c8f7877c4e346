"""The lab's PKI, as Kubernetes The Hard Way provisions it: one CA and the apiserver's `kubernetes`
certificate. Pure: the same lab gives byte-identical PEM files, every time, on every machine.

A plan must be deterministic (`up` writes it, `diff` compares checksums with it, `reset` writes it
back), so nothing here may come from a random source or the clock:

- keys are Ed25519, their 32-byte seeds a sha256 of the lab's name and a fixed label. Anyone who
  knows the lab's name can derive them: this is a lab's CA, trusted by nothing outside the lab;
- Ed25519 signatures are deterministic (RFC 8032), so signing twice gives the same certificate;
- serial numbers are hashes of the same inputs;
- the validity window is fixed (2020-01-01 to 2099-12-31), not "now + a year": a window taken
  from the clock would change the certificate at every plan, and a fixed window wide enough for
  any lab host's clock keeps curl from calling it "not yet valid" or "expired".
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from functools import cache
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from labbuilder.compile.ops import Ns, WriteFile
from labbuilder.spec import defaults
from labbuilder.spec.model import Lab

# cryptography is imported where a certificate is made (≈50 ms): `down`, `ls` and every command
# that only needs the paths below never pay for it.
if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(2099, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)

# Where KTHW puts them ("Bootstrapping the Kubernetes Control Plane"), and where a pod finds the
# CA that signed the apiserver's certificate (a service account token's ca.crt).
PKI_DIR = "/var/lib/kubernetes"
CA_PEM = f"{PKI_DIR}/ca.pem"
KUBERNETES_PEM = f"{PKI_DIR}/kubernetes.pem"
KUBERNETES_KEY = f"{PKI_DIR}/kubernetes-key.pem"
# /var/run/secrets/kubernetes.io/serviceaccount/ca.crt in a pod. /var/run is a symlink to /run in
# the node image, and a file is written by extracting a tar holding its parent folders: a `var/run`
# folder in it would replace that symlink (and with it /var/run/netns, where `ip netns` looks).
SERVICE_ACCOUNT_CA = "/run/secrets/kubernetes.io/serviceaccount/ca.crt"


@dataclass(frozen=True)
class Pki:
    """PEM texts: the CA and its key, the `kubernetes` certificate and its key."""

    ca: str
    ca_key: str
    cert: str
    key: str

    def files(self) -> dict[str, str]:
        """The instructor's copy (`labbuilder pki LAB --out DIR`), under KTHW's file names."""
        return {
            "ca.pem": self.ca,
            "ca-key.pem": self.ca_key,
            "kubernetes.pem": self.cert,
            "kubernetes-key.pem": self.key,
        }


def _seed(lab: str, label: str) -> bytes:
    return hashlib.sha256(f"labbuilder pki\0{lab}\0{label}".encode()).digest()


def private_key(lab: str, label: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(_seed(lab, label))


def serial(lab: str, label: str) -> int:
    """A positive serial of at most 20 bytes (RFC 5280), from the same hash as the key."""
    return int.from_bytes(hashlib.sha256(_seed(lab, label) + b"serial").digest()[:16], "big") >> 1 or 1


def dns_names(domain: str) -> list[str]:
    """The apiserver's names: KTHW's list, and the service's full name in this cluster's domain."""
    names = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster",
        "kubernetes.svc.cluster.local",
        f"kubernetes.default.svc.{domain}",
    ]
    return list(dict.fromkeys(names))


def ip_addresses(lab: Lab) -> list[IPv4Address]:
    """The `kubernetes` service IP (first of serviceCIDR), the controllers, and 127.0.0.1."""
    controllers = [n.ip for n in lab.nodes if n.role == "controller"]
    found = [defaults.kubernetes_ip(lab.cluster.service_cidr), *controllers, IPv4Address("127.0.0.1")]
    return list(dict.fromkeys(found))


def _pem(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _builder(
    lab: str, label: str, subject: x509.Name, issuer: x509.Name, key: Ed25519PrivateKey
) -> x509.CertificateBuilder:
    from cryptography import x509

    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial(lab, label))
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _name(unit: str, common: str) -> x509.Name:
    """KTHW's ca-csr.json and kubernetes-csr.json subjects."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Portland"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Oregon"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kubernetes"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _usage(cert_sign: bool) -> x509.KeyUsage:
    """digitalSignature (Ed25519 keys sign, they never encipher), plus certSign and cRLSign for a CA."""
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


@cache
def _issue(lab: str, ips: tuple[IPv4Address, ...], names: tuple[str, ...]) -> Pki:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_key, key = private_key(lab, "ca"), private_key(lab, "kubernetes")
    ca_name = _name("CA", "Kubernetes")
    ca = (
        _builder(lab, "ca", ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .sign(ca_key, None)
    )
    sans: list[x509.GeneralName] = [x509.IPAddress(ip) for ip in ips]
    sans += [x509.DNSName(n) for n in names]
    server_and_client = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        _builder(lab, "kubernetes", _name("Kubernetes The Hard Way", "kubernetes"), ca_name, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(server_and_client), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, None)
    )
    return Pki(_pem(ca), _key_pem(ca_key), _pem(cert), _key_pem(key))


def lab_pki(lab: Lab) -> Pki:
    """The lab's CA and `kubernetes` certificate (cached: a plan asks once per node)."""
    return _issue(lab.name, tuple(ip_addresses(lab)), tuple(dns_names(lab.cluster.domain)))


def node_files(lab: Lab, key: str) -> list[WriteFile]:
    """What every node holds at KTHW's paths (a controller's apiserver serves `kubernetes.pem`), and
    the CA a pod reads from its service account folder (pods share their node's filesystem)."""
    issued = lab_pki(lab)
    here = Ns(key)
    return [
        WriteFile(here, CA_PEM, issued.ca),
        WriteFile(here, KUBERNETES_PEM, issued.cert),
        WriteFile(here, KUBERNETES_KEY, issued.key),
        WriteFile(here, SERVICE_ACCOUNT_CA, issued.ca),
    ]


def router_files(lab: Lab, key: str) -> list[WriteFile]:
    """The router stands for KTHW's workstation, outside the cluster: it holds the CA (`curl
    --cacert /var/lib/kubernetes/ca.pem https://10.240.0.10:6443/version`), never a key."""
    return [WriteFile(Ns(key), CA_PEM, lab_pki(lab).ca)]
