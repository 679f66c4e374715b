"""TLS for the test peers: a CA of the session's own, a server certificate it signs, and HAProxy
terminating TLS in front of a plain-HTTP server, as clouds deploy glance-api and keystone.

    Authority.create(dir)         a CA (its key never leaves DIR) and a certificate for
                                  127.0.0.1 and localhost, signed by it (`cryptography`)
    Front(listen, backend, pem)   one HAProxy (Debian's `haproxy`, `make tools`) on 127.0.0.1:listen
                                  forwarding to 127.0.0.1:backend, adding X-Forwarded-Proto:
                                  https (Glance's http_proxy_to_wsgi then knows its scheme); a
                                  dead backend is a 503, as a load balancer answers

pyuwsgi's wheel is built without OpenSSL (`uwsgi --https-socket` is an unrecognized option), so
uWSGI cannot serve TLS itself here.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.processes import stop_group

#: How long HAProxy may take to listen.
START_TIMEOUT = 10.0
VALIDITY = datetime.timedelta(days=2)


class TlsError(RuntimeError):
    """HAProxy is missing or did not start; the message says where its output is."""


@dataclass(frozen=True)
class Authority:
    """The session's CA and the one server certificate it signed."""

    ca_cert: Path
    #: The server's certificate, then its key, in one PEM (HAProxy's `crt`).
    server_pem: Path

    @classmethod
    def create(cls, directory: Path) -> Authority:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "introspect test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        server = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        ca_cert = directory / "ca.pem"
        ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        server_pem = directory / "server.pem"
        server_pem.write_bytes(
            server.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        server_pem.chmod(0o600)
        return cls(ca_cert, server_pem)


HAPROXY_CONFIG = """\
global
    maxconn 256
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    option forwardfor
frontend tls
    bind 127.0.0.1:{listen} ssl crt {pem}
    http-request set-header X-Forwarded-Proto https
    default_backend plain
backend plain
    server only 127.0.0.1:{backend}
"""


@dataclass
class Front:
    """One HAProxy terminating TLS on `listen` for the plain-HTTP server on `backend`."""

    listen: int
    backend: int
    process: subprocess.Popen[bytes]
    log_file: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.listen}"

    @classmethod
    def start(cls, directory: Path, listen: int, backend: int, pem: Path) -> Front:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(haproxy).exists():
            raise TlsError("haproxy is missing: `make tools` installs it (Debian's haproxy package)")
        config = directory / f"haproxy-{listen}.cfg"
        config.write_text(HAPROXY_CONFIG.format(listen=listen, backend=backend, pem=pem))
        log_file = directory / f"haproxy-{listen}.log"
        with log_file.open("ab") as out:
            process = subprocess.Popen(
                [haproxy, "-db", "-f", config],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        front = cls(listen, backend, process, log_file)
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(listen):
            if process.poll() is not None or time.monotonic() > deadline:
                front.stop()
                raise TlsError(f"haproxy did not listen on 127.0.0.1:{listen}: see {log_file}")
            time.sleep(0.02)
        return front

    def stop(self) -> None:
        stop_group(self.process)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
