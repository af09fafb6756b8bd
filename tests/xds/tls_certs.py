"""Certificates made at test time with the openssl command (no key is ever committed): a CA
and leaf certificates it signs, for localhost and 127.0.0.1, good for servers and clients."""

import datetime
import subprocess
from pathlib import Path


def _openssl(*args: str):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class Leaf:
    """A certificate and its key, as files and as bytes."""

    def __init__(self, cert: Path, key: Path):
        self.cert, self.key = cert, key

    def serve_args(self):
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]

    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    def key_pem(self) -> bytes:
        return self.key.read_bytes()


class Ca:
    """A test CA in `folder`: `<name>-ca.pem`."""

    def __init__(self, folder: Path, name: str):
        self.folder, self.name = folder, name
        self.pem = folder / f"{name}-ca.pem"
        self.key = folder / f"{name}-ca.key"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-days", "2", "-keyout", str(self.key), "-out", str(self.pem),
                 "-subj", f"/CN={name} test CA")

    def pem_bytes(self) -> bytes:
        return self.pem.read_bytes()

    def leaf(self, name: str, serial: int, seconds: int = 0) -> Leaf:
        """A leaf valid for 2 days, or for `seconds` from now when given."""
        cert = self.folder / f"{self.name}-{name}-{serial}.pem"
        key = self.folder / f"{self.name}-{name}-{serial}.key"
        csr = self.folder / f"{self.name}-{name}-{serial}.csr"
        ext = self.folder / f"{self.name}-{name}-{serial}.ext"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n"
                       "basicConstraints=CA:FALSE\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        if not seconds:
            _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.pem), "-CAkey",
                     str(self.key), "-set_serial", str(serial), "-days", "2", "-out",
                     str(cert), "-extfile", str(ext))
            return Leaf(cert, key)
        # `openssl x509` (3.0) counts validity in days; `openssl ca` takes an end date.
        db = self.folder / f"{self.name}-db"
        db.mkdir(exist_ok=True)
        (db / "index.txt").touch()
        config = db / "ca.cnf"
        config.write_text(f"[ca]\ndefault_ca = test\n[test]\ndatabase = {db}/index.txt\n"
                          f"new_certs_dir = {db}\nserial = {db}/serial\ndefault_md = sha256\n"
                          "policy = any\n"
                          "unique_subject = no\n[any]\ncommonName = supplied\n")
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp = lambda t: t.strftime("%Y%m%d%H%M%SZ")
        _openssl("ca", "-batch", "-config", str(config), "-cert", str(self.pem), "-keyfile",
                 str(self.key), "-in", str(csr), "-out", str(cert), "-notext",
                 "-extfile", str(ext), "-rand_serial",
                 "-startdate", stamp(now - datetime.timedelta(minutes=5)),
                 "-enddate", stamp(now + datetime.timedelta(seconds=seconds)))
        return Leaf(cert, key)


def bundle(path: Path, *cas: Ca) -> Path:
    """Writes a CA bundle of `cas` to `path` the way a rotation tool should (aside, then
    renamed)."""
    aside = path.with_suffix(".new")
    aside.write_bytes(b"".join(ca.pem_bytes() for ca in cas))
    aside.replace(path)
    return path
