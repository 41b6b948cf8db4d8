"""Development TLS certificates and SuperNode authentication keys, made with ``cryptography``.

* :func:`write_dev_certificates`: a self-signed CA (``ca.crt``) and a server
  certificate it signs (``server.pem`` + ``server.key``) whose subject
  alternative names cover ``localhost``, ``127.0.0.1`` and any extra host names
  or addresses (a SuperLink's DNS name or public IP). The SuperLink serves
  TLS with ``--ssl-certfile server.pem --ssl-keyfile server.key
  --ssl-ca-certfile ca.crt``; SuperNodes and ``flwr`` trust ``ca.crt``. With
  ``nodes=N`` also ``supernode-<i>.pem`` + ``supernode-<i>.key``: the certificate
  of SuperNode ``i``'s Runtime API (name ``supernode-<i>``, as in
  ``docker-compose.yml``), which its ClientApp executor reaches over TLS.
  ``ca.key`` signs them all; it stays with whoever made them and enters no container.
* :func:`write_node_keys`: one EC key pair per SuperNode in OpenSSH format
  (``node-<i>`` private, ``node-<i>.pub`` public) on NIST P-384, the form
  ``flwr supernode register`` and ``flower-supernode
  --auth-supernode-private-key`` read in Flower 1.41.

These are for development and for a first cross-silo trial: a production
federation uses certificates from its own CA and keys generated on each silo.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_CERT, CA_KEY = "ca.crt", "ca.key"
VALID_DAYS = 365


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of a SuperLink's TLS setup."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> TlsFiles:
        directory = Path(directory).resolve()
        return cls(directory / CA_CERT, directory / "server.pem", directory / "server.key")

    @classmethod
    def of_node(cls, directory: Path, index: int) -> TlsFiles:
        """SuperNode ``index``'s Runtime API: ``supernode-<i>.pem`` / ``.key`` and ``ca.crt``."""
        directory = Path(directory).resolve()
        name = node_runtime_host(index)
        return cls(directory / CA_CERT, directory / f"{name}.pem", directory / f"{name}.key")

    def missing(self) -> list[Path]:
        return [p for p in (self.ca_cert, self.server_cert, self.server_key) if not p.is_file()]


def node_runtime_host(index: int) -> str:
    """The host name of SuperNode ``index``'s Runtime API (its compose service name)."""
    return f"supernode-{index}"


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's authentication key pair (OpenSSH format)."""

    private: Path
    public: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pfednas development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # keep order, drop duplicates
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


PRIVATE_MODE = 0o600  # keys: their owner only
PUBLIC_MODE = 0o644   # certificates and public keys: anyone reads, only the owner writes
FOLDER_MODE = 0o755   # a folder made here: only its owner adds or replaces files


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` with exactly ``mode`` from the first byte, whatever the umask (000
    would leave 0666 files anyone could replace); an existing file is replaced, never
    written through."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)  # the umask may have removed bits; set exactly these
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_private(path: Path, data: bytes) -> None:
    _write_file(path, data, PRIVATE_MODE)


def _write_public(path: Path, data: bytes) -> None:
    _write_file(path, data, PUBLIC_MODE)


def _make_folder(path: Path) -> None:
    """``path`` and missing parents, the ones made here ``FOLDER_MODE`` whatever the umask."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for folder in missing:
        os.chmod(folder, FOLDER_MODE)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_dev_certificates(out_dir: Path, hosts: Sequence[str] = (), *, nodes: int = 0,
                           valid_days: int = VALID_DAYS) -> TlsFiles:
    """Write ``ca.crt``, ``ca.key``, ``server.pem`` and ``server.key`` into ``out_dir``,
    and for ``i < nodes`` SuperNode ``i``'s Runtime API pair ``supernode-<i>.pem`` / ``.key``.

    The server certificate is valid for ``localhost``, ``127.0.0.1``, ``::1`` and
    every entry of ``hosts`` (DNS names or IP addresses); a node's for ``supernode-<i>``
    and the same loopback names.
    """
    out = Path(out_dir).resolve()
    _make_folder(out)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (x509.CertificateBuilder()
               .subject_name(_name("pfednas development CA"))
               .issuer_name(_name("pfednas development CA"))
               .public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(until)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                              critical=False)
               .sign(ca_key, hashes.SHA384()))
    _write_public(out / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(out / CA_KEY, _pem_key(ca_key))

    def server(files: TlsFiles, names: Sequence[str]) -> None:
        key = ec.generate_private_key(ec.SECP384R1())
        cert = (x509.CertificateBuilder()
                .subject_name(_name(names[0]))
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(until)
                .add_extension(_san([*names, *DEFAULT_HOSTS]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA384()))
        _write_public(files.server_cert, cert.public_bytes(serialization.Encoding.PEM))
        _write_private(files.server_key, _pem_key(key))

    files = TlsFiles.in_dir(out)
    server(files, [*hosts] or list(DEFAULT_HOSTS))
    for index in range(nodes):
        server(TlsFiles.of_node(out, index), [node_runtime_host(index)])
    return files


def node_key_paths(out_dir: Path, index: int) -> NodeKey:
    out = Path(out_dir).resolve()
    return NodeKey(private=out / f"node-{index}", public=out / f"node-{index}.pub")


def write_node_key(path: NodeKey) -> NodeKey:
    """One P-384 key pair in OpenSSH format (private key unencrypted, mode 0600)."""
    _make_folder(path.private.parent)
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(path.private, key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.OpenSSH,
                                                   serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    _write_public(path.public, public + f" {path.private.name}\n".encode())
    return path


def write_node_keys(out_dir: Path, count: int, *, start: int = 0) -> list[NodeKey]:
    """``node-<i>`` / ``node-<i>.pub`` for ``i`` in ``start .. start+count-1``."""
    return [write_node_key(node_key_paths(out_dir, i)) for i in range(start, start + count)]
