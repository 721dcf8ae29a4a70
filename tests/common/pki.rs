//! Certificates made at test time (rcgen): a test CA issuing server and
//! client leaves, and self-signed certificates as `openssl req -x509` makes
//! them.

use super::TempDir;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};

/// A test CA in a temporary directory, issuing leaf certificates.
pub struct Pki {
    pub dir: TempDir,
    issuer: Issuer<'static, KeyPair>,
    pub ca_der: CertificateDer<'static>,
    /// `ca.pem`, the CA certificate.
    pub ca: PathBuf,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("conntest test CA {tag}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca = dir.path("ca.pem");
        std::fs::write(&ca, cert.pem()).unwrap();
        Pki {
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            dir,
            ca,
        }
    }

    /// A leaf for `names` (DNS names or IP addresses) signed by this CA:
    /// `FILE.pem` and `FILE-key.pem` in the directory.
    pub fn leaf(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        self.leaf_with(file, names, |_| {})
    }

    /// A client certificate (CN `name`, clientAuth) signed by this CA.
    pub fn client_leaf(&self, file: &str, name: &str) -> (PathBuf, PathBuf) {
        self.leaf_with(file, &[name], |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        })
    }

    /// A leaf as [`Pki::leaf`], its parameters changed by `tweak` first.
    pub fn leaf_with(
        &self,
        file: &str,
        names: &[&str],
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        tweak(&mut params);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        write_pair(&self.dir.0, file, &cert.pem(), &key.serialize_pem())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path(name)
    }
}

/// A self-signed certificate for `name` (CN and subjectAltName), marked
/// CA:TRUE when `ca` as `openssl req -x509 -newkey ... -subj /CN=name`
/// makes it: `FILE.pem` and `FILE-key.pem` in `dir`.
pub fn self_signed(dir: &Path, file: &str, name: &str, ca: bool) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = match ca {
        true => IsCa::Ca(BasicConstraints::Unconstrained),
        false => IsCa::ExplicitNoCa,
    };
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed certificate");
    write_pair(dir, file, &cert.pem(), &key.serialize_pem())
}

fn write_pair(dir: &Path, file: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let cert_path = dir.join(format!("{file}.pem"));
    let key_path = dir.join(format!("{file}-key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (cert_path, key_path)
}
