//! TLS for the simulated bank and the connector's webhook: a throwaway PKI (a CA, a server
//! certificate for 127.0.0.1 and localhost, a client certificate) and an HTTPS listener that
//! may demand the client's certificate, as a bank's host-to-host endpoint does. With it a user
//! tries the connector's mutual TLS locally before pointing it at a real bank.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509Name, X509};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A CA and the two certificates it issued, PEM (keys PKCS#8).
pub struct Pki {
    pub ca: String,
    pub server_certificate: String,
    pub server_key: String,
    pub client_certificate: String,
    pub client_key: String,
}

/// Where [`Pki::write`] put each file.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    pub ca: PathBuf,
    pub server_certificate: PathBuf,
    pub server_key: PathBuf,
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
}

fn key() -> Result<PKey<Private>, openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn name(common_name: &str) -> Result<X509Name, openssl::error::ErrorStack> {
    let mut name = X509Name::builder()?;
    name.append_entry_by_text("O", "p2p bank simulator")?;
    name.append_entry_by_text("CN", common_name)?;
    Ok(name.build())
}

fn certificate(
    subject: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    server: bool,
) -> Result<X509, openssl::error::ErrorStack> {
    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    let subject_name = name(subject)?;
    builder.set_subject_name(&subject_name)?;
    builder.set_pubkey(key)?;
    builder.set_not_before(&*Asn1Time::days_from_now(0)?)?;
    builder.set_not_after(&*Asn1Time::days_from_now(365)?)?;
    match issuer {
        None => {
            builder.set_issuer_name(&subject_name)?;
            builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
            builder.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()?,
            )?;
            builder.sign(key, MessageDigest::sha256())?;
        }
        Some((ca, ca_key)) => {
            builder.set_issuer_name(ca.subject_name())?;
            builder.append_extension(BasicConstraints::new().build()?)?;
            builder.append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .key_agreement()
                    .build()?,
            )?;
            if server {
                builder.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
                let san = SubjectAlternativeName::new()
                    .ip("127.0.0.1")
                    .dns("localhost")
                    .build(&builder.x509v3_context(Some(ca), None))?;
                builder.append_extension(san)?;
            } else {
                builder.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
            }
            builder.sign(ca_key, MessageDigest::sha256())?;
        }
    }
    Ok(builder.build())
}

impl Pki {
    pub fn generate() -> Result<Pki, openssl::error::ErrorStack> {
        let pem = |c: &X509| -> Result<String, openssl::error::ErrorStack> {
            Ok(String::from_utf8_lossy(&c.to_pem()?).into_owned())
        };
        let key_pem = |k: &PKey<Private>| -> Result<String, openssl::error::ErrorStack> {
            Ok(String::from_utf8_lossy(&k.private_key_to_pem_pkcs8()?).into_owned())
        };
        let ca_key = key()?;
        let ca = certificate("p2p bank simulator CA", &ca_key, None, false)?;
        let server_key = key()?;
        let server = certificate("127.0.0.1", &server_key, Some((&ca, &ca_key)), true)?;
        let client_key = key()?;
        let client = certificate(
            "p2p bank connector",
            &client_key,
            Some((&ca, &ca_key)),
            false,
        )?;
        Ok(Pki {
            ca: pem(&ca)?,
            server_certificate: pem(&server)?,
            server_key: key_pem(&server_key)?,
            client_certificate: pem(&client)?,
            client_key: key_pem(&client_key)?,
        })
    }

    /// Writes the five files into `dir` (`ca.pem`, `server.pem`, `server.key`, `client.pem`,
    /// `client.key`).
    pub fn write(&self, dir: &Path) -> std::io::Result<PkiFiles> {
        std::fs::create_dir_all(dir)?;
        let files = PkiFiles {
            ca: dir.join("ca.pem"),
            server_certificate: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_certificate: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        };
        std::fs::write(&files.ca, &self.ca)?;
        std::fs::write(&files.server_certificate, &self.server_certificate)?;
        std::fs::write(&files.server_key, &self.server_key)?;
        std::fs::write(&files.client_certificate, &self.client_certificate)?;
        std::fs::write(&files.client_key, &self.client_key)?;
        Ok(files)
    }

    /// A TLS acceptor serving the server certificate and requiring a client certificate
    /// issued by the CA.
    pub fn acceptor(&self) -> Result<SslAcceptor, openssl::error::ErrorStack> {
        acceptor(
            self.server_certificate.as_bytes(),
            self.server_key.as_bytes(),
            Some(self.ca.as_bytes()),
        )
    }
}

/// A TLS acceptor serving `certificate` (PEM, its chain after it) with `key` (PEM), and, given
/// `client_ca` (PEM), accepting only clients with a certificate it issued.
pub fn acceptor(
    certificate: &[u8],
    key: &[u8],
    client_ca: Option<&[u8]>,
) -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    let mut chain = X509::stack_from_pem(certificate)?.into_iter();
    if let Some(leaf) = chain.next() {
        builder.set_certificate(&leaf)?;
    }
    for intermediate in chain {
        builder.add_extra_chain_cert(intermediate)?;
    }
    builder.set_private_key(&*PKey::private_key_from_pem(key)?)?;
    if let Some(ca) = client_ca {
        for ca in X509::stack_from_pem(ca)? {
            builder.cert_store_mut().add_cert(ca)?;
        }
        builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    Ok(builder.build())
}

/// A listener whose connections are TLS, handshaken before they are served; connections
/// that fail the handshake (no client certificate, another CA) are dropped.
pub struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: Arc<SslAcceptor>,
}

impl TlsListener {
    pub fn new(tcp: tokio::net::TcpListener, acceptor: SslAcceptor) -> Self {
        Self {
            tcp,
            acceptor: Arc::new(acceptor),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_openssl::SslStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(ssl) = openssl::ssl::Ssl::new(self.acceptor.context()) else {
                continue;
            };
            let Ok(mut stream) = tokio_openssl::SslStream::new(ssl, tcp) else {
                continue;
            };
            let handshake = Pin::new(&mut stream).accept();
            match tokio::time::timeout(Duration::from_secs(5), handshake).await {
                Ok(Ok(())) => return (stream, addr),
                Ok(Err(e)) => tracing::warn!(%addr, error = %e, "TLS handshake refused"),
                Err(_) => tracing::warn!(%addr, "TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
