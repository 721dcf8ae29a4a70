//! TLS for the loops: a [`Transport`] sits between a socket and an HTTP
//! machine, passing bytes through for plain TCP or through a rustls session
//! (itself sans-IO: ciphertext in, plaintext out) for TLS. Configs are built
//! here: trust roots from the platform (SSL_CERT_FILE and SSL_CERT_DIR
//! honoured), Mozilla's roots where the platform has none, extra CA files,
//! and an explicit `--insecure` that skips verification.

use crate::http::Outgoing;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key, from PEM files; `flags`
/// names the pair in errors (`--tls-cert/--tls-key`, `--cert/--key`).
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Never the key.
impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({} certificates)", self.chain.len())
    }
}

impl Identity {
    pub fn load(cert: &Path, key: &Path, flags: (&str, &str)) -> Result<Identity, String> {
        let (cert_flag, key_flag) = flags;
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("{cert_flag} {}: {e}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{cert_flag} {}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!(
                "{cert_flag} {}: no certificate in it",
                cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("{key_flag} {}: {e}", key.display()))?;
        Ok(Identity { chain, key })
    }
}

/// Who verifies a server's certificate: a refusal's words name the flags of
/// that side (`--cacert` and `--insecure` on the client, `--upstream-cacert`
/// on the server, which has no way to skip verification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verifying {
    /// `conntest client`, `run` and `report` reaching the server.
    Client,
    /// `conntest server` reaching an https upstream.
    Upstream,
}

impl Verifying {
    fn ca_flag(self) -> &'static str {
        match self {
            Verifying::Client => "--cacert",
            Verifying::Upstream => "--upstream-cacert",
        }
    }

    /// The way around verification, after a fix: `, or use --insecure`.
    fn or_insecure(self) -> &'static str {
        match self {
            Verifying::Client => ", or use --insecure",
            Verifying::Upstream => "",
        }
    }
}

/// A client config: platform roots (or Mozilla's), plus `extra_ca` files;
/// or no verification at all when `insecure`. With `identity`, it presents
/// that client certificate to a server that asks for one (mutual TLS).
pub fn client_config(
    extra_ca: &[&Path],
    insecure: bool,
    identity: Option<Identity>,
    verifying: Verifying,
) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let wants_client_cert = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        let mut trusted = rustls_native_certs::load_native_certs().certs;
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(trusted.iter().cloned());
        if added == 0 {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        let mut pinned = Vec::new();
        for path in extra_ca {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("CA file {}: no certificate in it", path.display()));
            }
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
                pinned.push(cert);
            }
        }
        trusted.extend(pinned.iter().cloned());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("TLS: {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                webpki,
                pinned,
                trusted,
                verifying,
            }))
    };
    let mut config = match identity {
        Some(id) => wants_client_cert
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|e| format!("client certificate: {e}"))?,
        None => wants_client_cert.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A server config from a PEM certificate chain and private key.
/// With `client_ca`, every client must present a certificate issued by a
/// CA in that file (mutual TLS).
pub fn server_config(
    identity: Identity,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let flag =
                |e: &dyn std::fmt::Display| format!("--tls-client-ca {}: {e}", path.display());
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| flag(&e))? {
                roots
                    .add(cert.map_err(|e| flag(&e))?)
                    .map_err(|e| flag(&e))?;
            }
            if roots.is_empty() {
                return Err(flag(&"no certificate in it"));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| flag(&e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(identity.chain, identity.key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any certificate: `--insecure`, said so in the summary.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Full webpki verification, with two additions: a certificate found in a
/// `--cacert` file is accepted when presented exactly (pinning, as curl
/// effectively does for a self-signed certificate, CA:TRUE or not), and a
/// refusal carries what was presented, so the error can say it in words.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of the `--cacert` files.
    pinned: Vec<CertificateDer<'static>>,
    /// Every certificate trusted here, to name the one a refused
    /// certificate's issuer name points at.
    trusted: Vec<CertificateDer<'static>>,
    verifying: Verifying,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(cause) => {
                    let refused = Refused {
                        cause,
                        presented: crate::cert::describe(end_entity),
                        same_name: crate::cert::issuer_among(end_entity, &self.trusted),
                        verifying: self.verifying,
                    };
                    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                        Arc::new(refused),
                    )))
                }
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A certificate verification refused, with what was presented.
#[derive(Debug)]
struct Refused {
    cause: CertificateError,
    presented: Option<crate::cert::Described>,
    /// A trusted certificate whose subject is the presented one's issuer
    /// name (but which did not sign it).
    same_name: Option<crate::cert::Described>,
    verifying: Verifying,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.cause)
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// The refusal in words: the host, what was presented, why it was
    /// refused, and the flag that fixes it.
    fn words(&self, host: &str) -> String {
        let ca = self.verifying.ca_flag();
        let or_insecure = self.verifying.or_insecure();
        let trust = match self.verifying {
            Verifying::Client => {
                "trust its CA with --cacert FILE, or skip verification with --insecure"
            }
            Verifying::Upstream => "trust its CA with --upstream-cacert FILE",
        };
        let pin =
            format!("give that certificate to {ca} FILE (pinned by exact match){or_insecure}");
        let Some(cert) = &self.presented else {
            return format!(
                "TLS: the certificate of {host} was refused ({:?}) and cannot be read: {trust}",
                self.cause
            );
        };
        let what = format!("the certificate of {host} ({cert})");
        use CertificateError as E;
        match &self.cause {
            E::Expired | E::ExpiredContext { .. } => format!(
                "TLS: {what} has expired: it was valid from {} to {}; renew it{or_insecure}",
                cert.not_before, cert.not_after
            ),
            E::NotValidYet | E::NotValidYetContext { .. } => format!(
                "TLS: {what} is not valid yet: it is valid from {} to {}; check the clocks{or_insecure}",
                cert.not_before, cert.not_after
            ),
            E::NotValidForName | E::NotValidForNameContext { .. } => format!(
                "TLS: {what} is not valid for the name '{host}': it names {}; use a URL with one of those names{or_insecure}",
                if cert.names.is_empty() { "no DNS name or address".to_owned() } else { cert.names.join(", ") }
            ),
            E::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => format!(
                "TLS: {what} is a CA certificate (CA:TRUE) used as the server's own; to trust exactly this certificate, give it to {ca} FILE (pinned by exact match){or_insecure}"
            ),
            _ => match &self.same_name {
                Some(tried) if cert.self_signed => format!(
                    "TLS: {what} is self-signed and not trusted here: the certificate trusted here with its name ({tried}) is another one, and a name match is not a chain; {pin}"
                ),
                Some(tried) => format!(
                    "TLS: {what} is not trusted: the certificate trusted here with its issuer's name ({tried}) did not sign it, and a name match is not a chain; {trust}"
                ),
                None if cert.self_signed => {
                    format!("TLS: {what} is self-signed and not trusted here; {pin}")
                }
                None => format!("TLS: {what} is not trusted: no CA trusted here issued it; {trust}"),
            },
        }
    }
}

/// What a TLS session agreed to, for the summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Negotiated {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// As IANA names it, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// The application protocol agreed with ALPN, if any.
    pub alpn: Option<String>,
}

/// The bytes between a socket and an HTTP machine.
#[derive(Default)]
pub enum Transport {
    #[default]
    Plain,
    Tls(Box<TlsState>),
}

pub struct TlsState {
    session: rustls::Connection,
    /// The name the peer's certificate must carry (client side), for errors.
    peer_name: Box<str>,
    /// Plaintext decrypted from the last read.
    plain: Vec<u8>,
    /// Ciphertext not yet accepted by the socket.
    pending: Vec<u8>,
    written: usize,
    /// The peer sent close_notify.
    closed: bool,
}

impl Transport {
    pub fn tls_client(config: &Arc<ClientConfig>, host: &str) -> Result<Transport, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("TLS server name '{host}': {e}"))?;
        let session = rustls::ClientConnection::new(Arc::clone(config), name)
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Transport::tls(session.into(), host))
    }

    pub fn tls_server(config: &Arc<ServerConfig>) -> Result<Transport, String> {
        let session =
            rustls::ServerConnection::new(Arc::clone(config)).map_err(|e| format!("TLS: {e}"))?;
        Ok(Transport::tls(session.into(), ""))
    }

    fn tls(session: rustls::Connection, peer_name: &str) -> Transport {
        Transport::Tls(Box::new(TlsState {
            session,
            peer_name: peer_name.into(),
            plain: Vec::new(),
            pending: Vec::new(),
            written: 0,
            closed: false,
        }))
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Whether a TLS handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(t) => t.session.is_handshaking(),
        }
    }

    /// What the session agreed to, once its handshake is done.
    pub fn negotiated(&self) -> Option<Negotiated> {
        let Transport::Tls(t) = self else {
            return None;
        };
        let version = match t.session.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
            other => format!("{other:?}"),
        };
        let suite = t.session.negotiated_cipher_suite()?.suite();
        Some(Negotiated {
            version,
            cipher_suite: suite
                .as_str()
                .map_or_else(|| format!("{suite:?}"), str::to_owned),
            alpn: t
                .session
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        })
    }

    /// The subject of the certificate the peer presented (a client's, with
    /// mutual TLS), once the handshake is done.
    pub fn peer_subject(&self) -> Option<String> {
        let Transport::Tls(t) = self else {
            return None;
        };
        let der = t.session.peer_certificates()?.first()?;
        crate::cert::subject(der)
    }

    /// The peer ended the TLS session (close_notify).
    pub fn peer_closed(&self) -> bool {
        matches!(self, Transport::Tls(t) if t.closed)
    }

    /// Bytes read from the socket in, plaintext for the HTTP machine out.
    /// A TLS error names its cause (untrusted certificate, wrong name,
    /// not TLS at all...).
    pub fn decode<'a>(&'a mut self, mut input: &'a [u8]) -> Result<&'a [u8], String> {
        let t = match self {
            Transport::Plain => return Ok(input),
            Transport::Tls(t) => t,
        };
        t.plain.clear();
        while !input.is_empty() {
            t.session
                .read_tls(&mut input)
                .map_err(|e| format!("TLS: {e}"))?;
            t.session
                .process_new_packets()
                .map_err(|e| describe_tls_error(&e, &t.peer_name))?;
            loop {
                let start = t.plain.len();
                t.plain.resize(start + 16 * 1024, 0);
                match t.session.reader().read(&mut t.plain[start..]) {
                    Ok(0) => {
                        t.plain.truncate(start);
                        t.closed = true;
                        break;
                    }
                    Ok(n) => t.plain.truncate(start + n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        t.plain.truncate(start);
                        break;
                    }
                    Err(e) => {
                        t.plain.truncate(start);
                        return Err(format!("TLS: {e}"));
                    }
                }
            }
        }
        Ok(&t.plain)
    }

    /// Takes `plain` (the HTTP machine's output) toward the socket and
    /// writes what the socket accepts. Returns how much of `plain` was
    /// taken; the caller offers the rest again when the socket is writable.
    pub fn write(&mut self, plain: &[u8], socket: &mut impl Write) -> io::Result<usize> {
        match self {
            Transport::Plain => {
                let mut done = 0;
                while done < plain.len() {
                    match socket.write(&plain[done..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(done)
            }
            Transport::Tls(t) => {
                // rustls takes plaintext up to its buffer limit; what it
                // encrypts is pushed to the socket before more is taken, so
                // neither side of the session buffers without bound.
                let mut taken = 0;
                loop {
                    if taken < plain.len() {
                        taken += t.session.writer().write(&plain[taken..])?;
                    }
                    while t.session.wants_write() {
                        t.session.write_tls(&mut t.pending)?;
                    }
                    while t.written < t.pending.len() {
                        match socket.write(&t.pending[t.written..]) {
                            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                            Ok(n) => t.written += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(taken),
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    t.pending.clear();
                    t.written = 0;
                    if taken == plain.len() || t.session.is_handshaking() {
                        return Ok(taken);
                    }
                }
            }
        }
    }

    /// Moves a machine's output to the socket until the socket would block
    /// or nothing is left. With TLS, also sends handshake records when the
    /// machine has nothing to say.
    pub fn send(&mut self, machine: &mut impl Outgoing, socket: &mut impl Write) -> io::Result<()> {
        loop {
            let out = machine.pending();
            let len = out.len();
            let n = self.write(out, socket)?;
            machine.consumed(n);
            if n == 0 || n < len {
                return Ok(());
            }
        }
    }

    /// Ciphertext is waiting for the socket to accept it.
    pub fn has_pending(&self) -> bool {
        matches!(self, Transport::Tls(t) if t.written < t.pending.len())
    }
}

/// Whether bytes that failed as TLS look like a plain HTTP request.
pub fn looks_like_http(bytes: &[u8]) -> bool {
    ["GET ", "POST ", "HEAD ", "PUT ", "DELETE ", "OPTIONS "]
        .iter()
        .any(|m| bytes.starts_with(m.as_bytes()))
}

/// A rustls error in words a user can act on.
fn describe_tls_error(e: &rustls::Error, peer_name: &str) -> String {
    use rustls::Error;
    match e {
        Error::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<Refused>() {
                Some(refused) => refused.words(peer_name),
                None => format!("TLS: {e}"),
            }
        }
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "TLS: certificate not trusted (unknown issuer): add its CA with --cacert \
             (client) or --upstream-cacert (server)"
                .into()
        }
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            format!("TLS: certificate not valid for host name '{peer_name}'")
        }
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "TLS: certificate expired".into()
        }
        Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => format!(
            "TLS: {peer_name} requires a client certificate: give one with --cert FILE --key FILE"
        ),
        Error::AlertReceived(
            alert @ (rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::CertificateUnknown
            | rustls::AlertDescription::AccessDenied),
        ) if !peer_name.is_empty() => format!(
            "TLS: {peer_name} refused the client certificate ({alert:?}): give --cert one it trusts (issued by a CA in its --tls-client-ca)"
        ),
        Error::NoCertificatesPresented => {
            "TLS: the client presented no certificate, and --tls-client-ca requires one".into()
        }
        Error::InvalidMessage(_) => {
            "TLS: the peer does not speak TLS (or sent a corrupt message)".into()
        }
        other => format!("TLS: {other}"),
    }
}
