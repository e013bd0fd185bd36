//! TLS for the node's gRPC, bound to the node's Ed25519 identity (as Walrus nodes do): a node
//! serves a self-signed X.509 certificate whose key *is* its identity key, and a client that
//! knows the node's ID (from the committee) accepts the connection only if the certificate's
//! key equals that ID and the TLS 1.3 handshake is signed by it. No CA is involved.
//!
//! Addresses say whether a node speaks TLS: `https://host:port` does, `host:port` (or
//! `http://host:port`) does not.
//!
//! The admin listener also asks the *client* for a certificate (mutual TLS) and completes the
//! handshake only for the admin key: an Ed25519 key derived from the admin token
//! ([`admin_client_key`]), so whoever holds the token (the operator's Secret, the local
//! supervisor's file) holds the key, with nothing new to provision, and a peer without it
//! cannot hold one of the listener's connections past a failed handshake.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::protocol::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("making the node certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of an Ed25519 PKCS#8 v1 private key, followed by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Split `address` into (TLS?, `host:port`).
pub fn split_address(address: &str) -> (bool, &str) {
    if let Some(rest) = address.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, address.strip_prefix("http://").unwrap_or(address))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for `key` (its common name says what it is for).
fn self_signed(
    key: &SigningKey,
    what: &str,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(&key.to_bytes());
    let der = PrivatePkcs8KeyDer::from(pkcs8);
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)?;
    let id = hex::encode(key.verifying_key().to_bytes());
    let mut params = rcgen::CertificateParams::new(vec![format!("floe-{}", &id[..16])])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("floe {what} {id}"));
    let cert = params.self_signed(&pair)?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(der)))
}

/// The server side: a self-signed certificate made from the node key, TLS 1.3, ALPN h2.
pub fn server_config(key: &SigningKey) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert, private) = self_signed(key, "node")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// The key an admin client proves in the admin listener's TLS handshake: derived from the
/// admin token, so the token's holders have it and nobody else does.
pub fn admin_client_key(token: &str) -> SigningKey {
    SigningKey::from_bytes(&blake3::derive_key(
        "floe 2026-12 admin client key v1",
        token.as_bytes(),
    ))
}

/// The admin listener's side: the node's certificate, and a client certificate required whose
/// key is `admin` (the public half of [`admin_client_key`]); without a token (`None`) no
/// client is accepted, as the admin API refuses every call then anyway.
pub fn admin_server_config(
    key: &SigningKey,
    admin: Option<ed25519_dalek::VerifyingKey>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert, private) = self_signed(key, "node")?;
    let provider = provider();
    let verifier = Arc::new(AdminClientVerifier {
        expect: admin.map(|k| k.to_bytes()),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], private)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// The client side. With `expect`, only the node with that ID is accepted; without, any node
/// (encrypted, not authenticated: for a first contact such as `floe --connect`). With
/// `client_key`, a certificate of that key is presented when the server asks (the admin
/// listener's mutual TLS).
pub fn client_config(
    expect: Option<NodeId>,
    client_key: Option<&SigningKey>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(IdentityVerifier {
        expect,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match client_key {
        None => builder.with_no_client_auth(),
        Some(k) => {
            let (cert, private) = self_signed(k, "admin client")?;
            builder.with_client_auth_cert(vec![cert], private)?
        }
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// The Ed25519 key a certificate carries, if it carries exactly one.
pub fn certificate_key(cert: &[u8]) -> Option<[u8; 32]> {
    let at = cert
        .windows(ED25519_SPKI_PREFIX.len())
        .position(|w| w == ED25519_SPKI_PREFIX)?;
    let key = cert.get(at + 12..at + 44)?;
    let rest = &cert[at + 1..];
    if rest
        .windows(ED25519_SPKI_PREFIX.len())
        .any(|w| w == ED25519_SPKI_PREFIX)
    {
        return None;
    }
    key.try_into().ok()
}

#[derive(Debug)]
struct IdentityVerifier {
    expect: Option<NodeId>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = certificate_key(end_entity).ok_or_else(|| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        match self.expect {
            Some(id) if id.0 != key => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            // the handshake signature (checked below with the certificate's key) proves the
            // peer holds the identity key
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Accepts a client certificate only when its Ed25519 key is the admin key (the handshake
/// signature, checked with the certificate's key, proves the client holds it).
#[derive(Debug)]
struct AdminClientVerifier {
    expect: Option<[u8; 32]>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AdminClientVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match (self.expect, certificate_key(end_entity)) {
            (Some(want), Some(got)) if want == got => Ok(ClientCertVerified::assertion()),
            (_, None) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            )),
            _ => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A tonic connector speaking TLS with `config` (from [`client_config`]) to `host:port`.
pub fn connector(
    host_port: String,
    config: Arc<rustls::ClientConfig>,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    let tls = tokio_rustls::TlsConnector::from(config);
    tower::service_fn(move |_: http::Uri| {
        let tls = tls.clone();
        let host_port = host_port.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&host_port).await?;
            let _ = tcp.set_nodelay(true);
            let host = host_port
                .rsplit_once(':')
                .map_or(host_port.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let name = ServerName::try_from(host)
                .unwrap_or_else(|_| ServerName::try_from("floe-node").expect("valid name"));
            let stream = tls.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_carries_the_node_key() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let cfg = server_config(&key).unwrap();
        drop(cfg);
        let admin = admin_client_key("token");
        assert_ne!(admin.to_bytes(), admin_client_key("token2").to_bytes());
        admin_server_config(&key, Some(admin.verifying_key())).unwrap();
        client_config(None, Some(&admin)).unwrap();
        let pair = {
            let mut p = ED25519_PKCS8_PREFIX.to_vec();
            p.extend_from_slice(&key.to_bytes());
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
                &PrivatePkcs8KeyDer::from(p),
                &rcgen::PKCS_ED25519,
            )
            .unwrap()
        };
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        assert_eq!(
            certificate_key(cert.der()),
            Some(key.verifying_key().to_bytes())
        );
        assert_eq!(split_address("https://a:1"), (true, "a:1"));
        assert_eq!(split_address("a:1"), (false, "a:1"));
    }
}
