//! Certificates made at test time (rcgen): a CA and leaf certificates it signs, written as PEM
//! files in a temporary directory that goes with the value. No key is ever committed.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SerialNumber,
};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "discovery-{tag}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The extended key usages of a node's certificate: it serves and is a client of its peers.
pub const NODE: &[ExtendedKeyUsagePurpose] = &[
    ExtendedKeyUsagePurpose::ServerAuth,
    ExtendedKeyUsagePurpose::ClientAuth,
];

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// rcgen's default: from 1975 to 4096.
    Now,
    /// In 2000 only.
    Expired,
    /// From yesterday until this many days from now.
    Days(i64),
    /// From 30 days from now.
    NotYet,
    /// From this many seconds from now, for a year.
    InSeconds(i64),
    /// From a minute ago until this many seconds from now.
    ForSeconds(i64),
}

/// A test CA: its certificate is `<dir>/<name>-ca.pem`.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: PathBuf,
    dir: PathBuf,
    name: String,
}

/// A certificate chain and key in PEM files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Leaf {
    /// `CERT_FLAG C KEY_FLAG K` as owned strings.
    pub fn flags(&self, cert_flag: &str, key_flag: &str) -> Vec<String> {
        vec![
            cert_flag.into(),
            self.cert.display().to_string(),
            key_flag.into(),
            self.key.display().to_string(),
        ]
    }

    /// `--tls-cert C --tls-key K` (server).
    pub fn serve_args(&self) -> Vec<String> {
        self.flags("--tls-cert", "--tls-key")
    }

    /// `--cert C --key K` (client commands).
    pub fn client_args(&self) -> Vec<String> {
        self.flags("--cert", "--key")
    }
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let cert = params.self_signed(&key).expect("self-signed CA");
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, cert.pem()).expect("write CA");
        Ca {
            issuer: Issuer::new(params, key),
            pem,
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    /// A certificate for `localhost` and 127.0.0.1, good for servers and clients, valid now.
    pub fn leaf(&self, name: &str, serial: u64) -> Leaf {
        self.leaf_with(name, serial, false)
    }

    /// Like [`Ca::leaf`]; `expired` makes one that expired in 2001.
    pub fn leaf_with(&self, name: &str, serial: u64, expired: bool) -> Leaf {
        let validity = if expired {
            Validity::Expired
        } else {
            Validity::Now
        };
        self.issue(name, serial, &["localhost", "127.0.0.1"], NODE, validity)
    }

    /// An agent's certificate: client use only, for the DNS name `name` (not `localhost`).
    pub fn client_leaf(&self, name: &str, serial: u64) -> Leaf {
        let usages = &[ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(name, serial, &[name], usages, Validity::Now)
    }

    /// A certificate for the names (DNS names or IP addresses) `sans`, with the extended key
    /// usages `usages` (none: no EKU extension) and `validity`.
    pub fn issue(
        &self,
        name: &str,
        serial: u64,
        sans: &[&str],
        usages: &[ExtendedKeyUsagePurpose],
        validity: Validity,
    ) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let sans = sans.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = usages.to_vec();
        let in_days = |days: i64| time::OffsetDateTime::now_utc() + time::Duration::days(days);
        (params.not_before, params.not_after) = match validity {
            Validity::Now => (params.not_before, params.not_after),
            Validity::Expired => (
                rcgen::date_time_ymd(2000, 1, 1),
                rcgen::date_time_ymd(2001, 1, 1),
            ),
            Validity::Days(days) => (in_days(-1), in_days(days)),
            Validity::NotYet => (in_days(30), in_days(365)),
            Validity::InSeconds(secs) => (
                time::OffsetDateTime::now_utc() + time::Duration::seconds(secs),
                in_days(365),
            ),
            Validity::ForSeconds(secs) => (
                time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
                time::OffsetDateTime::now_utc() + time::Duration::seconds(secs),
            ),
        };
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let leaf = Leaf {
            cert: self.dir.join(format!("{}-{name}-{serial}.pem", self.name)),
            key: self.dir.join(format!("{}-{name}-{serial}.key", self.name)),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }
}

/// The earliest not-after of the certificates in the PEM file `path`, in Unix seconds.
pub fn not_after(path: &Path) -> i64 {
    let pem = std::fs::read(path).expect("read certificate");
    rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .map(|der| {
            let der = der.expect("a PEM certificate");
            let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("X.509");
            cert.validity().not_after.timestamp()
        })
        .min()
        .expect("a certificate")
}

/// The serial number (hex, as `openssl x509 -serial` prints it) of the certificate a TLS
/// server at `addr` (`host:port`) presents to a new connection, read with `openssl s_client`.
pub fn served_serial(addr: &str) -> Option<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut client = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl s_client");
    drop(client.stdin.take());
    let out = client.wait_with_output().ok()?;
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl x509");
    let written = x509
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(&out.stdout));
    let out = x509.wait_with_output().ok()?;
    written?.ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let serial = text.trim().strip_prefix("serial=")?;
    Some(serial.trim_start_matches('0').to_owned())
}
