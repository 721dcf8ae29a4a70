//! A certificate read for people: subject, issuer, validity and names, for
//! TLS errors that say what was presented.

use std::fmt;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a certificate says about itself.
#[derive(Debug, Clone)]
pub struct Described {
    pub subject: String,
    pub issuer: String,
    /// RFC 3339.
    pub not_before: String,
    pub not_after: String,
    /// Its DNS names and addresses (subjectAltName).
    pub names: Vec<String>,
    pub self_signed: bool,
    pub ca: bool,
}

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subject '{}', issuer '{}'", self.subject, self.issuer)?;
        if self.self_signed {
            f.write_str(", self-signed")?;
        }
        if self.ca {
            f.write_str(", CA:TRUE")?;
        }
        write!(f, ", valid {} to {}", self.not_before, self.not_after)
    }
}

/// Reads a DER certificate; None when it does not parse.
pub fn describe(der: &[u8]) -> Option<Described> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    // Whole seconds, as certificates hold them.
    let time = |t: x509_parser::time::ASN1Time| {
        crate::time::rfc3339(i128::from(t.timestamp()) * 1_000_000_000).replace(".000000000Z", "Z")
    };
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => <[u8; 4]>::try_from(*ip)
                        .ok()
                        .map(|a| std::net::IpAddr::from(a).to_string()),
                    16 => <[u8; 16]>::try_from(*ip)
                        .ok()
                        .map(|a| std::net::IpAddr::from(a).to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(Described {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        names,
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        ca: cert.is_ca(),
    })
}

/// A certificate's subject, as [`Described`] names it.
pub fn subject(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.subject().to_string())
}

/// A certificate of `trusted`, other than `der` itself, whose subject is
/// `der`'s issuer name: the one a verifier tried as its issuer.
pub fn issuer_among<T: AsRef<[u8]>>(der: &[u8], trusted: &[T]) -> Option<Described> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let issuer = cert.issuer().as_raw();
    trusted
        .iter()
        .map(AsRef::as_ref)
        .filter(|t| *t != der)
        .find(|t| {
            X509Certificate::from_der(t)
                .is_ok_and(|(_, candidate)| candidate.subject().as_raw() == issuer)
        })
        .and_then(describe)
}
