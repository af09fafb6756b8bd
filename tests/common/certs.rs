//! Certificates made at test time (rcgen): a CA and leaf certificates it signs, written as PEM
//! files in a temporary directory that goes with the value. No key is ever committed.

use std::path::{Path, PathBuf};

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
        let validity = expired.then(|| {
            (
                rcgen::date_time_ymd(2000, 1, 1),
                rcgen::date_time_ymd(2001, 1, 1),
            )
        });
        self.leaf_valid(name, serial, validity)
    }

    /// Like [`Ca::leaf`], valid from a minute ago for `secs` more seconds only.
    pub fn leaf_expiring(&self, name: &str, serial: u64, secs: i64) -> Leaf {
        let now = time::OffsetDateTime::now_utc();
        let validity = (
            now - time::Duration::minutes(1),
            now + time::Duration::seconds(secs),
        );
        self.leaf_valid(name, serial, Some(validity))
    }

    fn leaf_valid(
        &self,
        name: &str,
        serial: u64,
        validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    ) -> Leaf {
        let sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(name, serial, sans, usages, validity)
    }

    /// An agent's certificate: client use only, for the DNS name `name` (not `localhost`).
    pub fn client_leaf(&self, name: &str, serial: u64) -> Leaf {
        let usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(name, serial, vec![name.to_owned()], usages, None)
    }

    fn issue(
        &self,
        name: &str,
        serial: u64,
        sans: Vec<String>,
        usages: Vec<ExtendedKeyUsagePurpose>,
        validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    ) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = usages;
        if let Some((not_before, not_after)) = validity {
            params.not_before = not_before;
            params.not_after = not_after;
        }
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
