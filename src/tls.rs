//! TLS pieces that lesson 14 teaches and later programs reuse (lesson 11's load client
//! with `--tls CA`, the protocol checks of `cargo run -- check 14`): reading PEM files,
//! the client's configuration that trusts one CA, and one-line explanations of the
//! errors a TLS client meets.
//!
//! The crates: `rustls` (TLS 1.2 and 1.3 in Rust, with only the `ring` crypto
//! provider compiled in) and `rustls-pki-types` (the certificate and key types, and
//! PEM parsing through its `PemObject` trait).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// The default port of lesson 14.
pub const DEFAULT_PORT: u16 = 10014;

/// Log words of the lesson 14 server that tests look for.
pub const NOT_TLS: &str = "not TLS:";
pub const TRUNCATED: &str = "truncated:";
pub const HANDSHAKE_DONE: &str = "handshake done";
pub const HANDSHAKE_FAILED: &str = "handshake failed:";
pub const CA_CERTIFICATE: &str = "CA certificate:";

/// The folder where the lesson 14 server keeps the CA and the certificate it makes
/// when given none: `target/14_tls_certs`, next to the folder of the programs
/// (`target/debug`), so that `cargo clean` removes it and the server, its client and
/// the front door (all in `target/debug`) agree on it without being told.
pub fn default_cert_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("14_tls_certs")))
        .unwrap_or_else(|| PathBuf::from("target/14_tls_certs"))
}

/// The CA certificate in a certificate folder.
pub fn ca_file(cert_dir: &Path) -> PathBuf {
    cert_dir.join("ca.pem")
}

// ANCHOR: pem
/// Every certificate in a PEM file (`-----BEGIN CERTIFICATE-----` blocks), in order:
/// the server's own first, then the CAs between it and a root, if any.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let what = |err| format!("cannot read certificates from {}: {err}", path.display());
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(what)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(what)?;
    if certificates.is_empty() {
        return Err(format!(
            "{} holds no certificate (no -----BEGIN CERTIFICATE----- block)",
            path.display()
        ));
    }
    Ok(certificates)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|err| format!("cannot read a private key from {}: {err}", path.display()))
}
// ANCHOR_END: pem

// ANCHOR: client_config
/// A client configuration that trusts only the CA certificates in `ca` (not the
/// system's): the server must present a chain to one of them, for the name asked.
/// Verification cannot be switched off here; that is the point of TLS.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates(ca)? {
        roots
            .add(certificate)
            .map_err(|err| format!("{} is not a usable CA certificate: {err}", ca.display()))?;
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
// ANCHOR_END: client_config

/// The name the server's certificate must carry: a DNS name (`localhost`) or an IP
/// address (`127.0.0.1`, checked against the certificate's IP addresses).
pub fn server_name(text: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(text.to_string())
        .map_err(|_| format!("'{text}' is not a valid server name (a DNS name or an IP address)"))
}

/// One line for a failed TLS handshake or session, as a client sees it: what went
/// wrong and, where one helps, what to do. `ca` and `name` are what the client trusted
/// and asked for; `first_bytes` is the start of what the server sent, if anything.
pub fn explain(err: &io::Error, ca: &Path, name: &str, first_bytes: &[u8]) -> String {
    // A TLS server's first record is a handshake (22) or an alert (21).
    if let Some(&first) = first_bytes.first() {
        if first != 0x16 && first != 0x15 {
            return format!(
                "the server is not speaking TLS: it sent {} (is it a TLS server? this port \
                 may belong to another lesson)",
                crate::show::bytes(&first_bytes[..first_bytes.len().min(40)])
            );
        }
    }
    let tls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(rustls::Error::InvalidCertificate(certificate)) => match certificate {
            CertificateError::UnknownIssuer => format!(
                "the server's certificate is not signed by a CA in {} (UnknownIssuer): \
                 untrusted; give --ca the CA that signed it",
                ca.display()
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the server's certificate is not valid for the name '{name}' \
                     (NotValidForName): {certificate}"
                )
            }
            CertificateError::BadSignature => format!(
                "the server's certificate names an issuer in {} but is not signed by its key \
                 (BadSignature): another CA with the same name? untrusted",
                ca.display()
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the server's certificate has expired: {certificate}")
            }
            other if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                "the server's certificate is a CA certificate (basicConstraints CA:TRUE, \
                 CaUsedAsEndEntity), which may sign others but not serve as a server's own: \
                 make it with -addext basicConstraints=critical,CA:FALSE, or sign a leaf with a CA"
                    .into()
            }
            other => format!("the server's certificate was rejected: {other}"),
        },
        Some(rustls::Error::InappropriateHandshakeMessage {
            got_type: rustls::HandshakeType::ClientHello,
            ..
        }) => "the server sent our own ClientHello back: it is a plain echo server, not TLS \
               (this port may belong to another lesson)"
            .into(),
        Some(rustls::Error::InvalidMessage(_)) => {
            format!("the server's reply is not TLS ({err}); is it a TLS server?")
        }
        Some(other) => format!("TLS failed: {other}"),
        None => match err.kind() {
            io::ErrorKind::UnexpectedEof => {
                "the server closed the connection during the handshake (not a TLS server, \
                 or it refused us)"
                    .into()
            }
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                "the server did not answer the TLS handshake in time (is it a TLS server?)".into()
            }
            _ => format!("TLS failed: {err}"),
        },
    }
}

/// The human name of a TLS record's content type (the first byte of its header).
pub fn record_type(byte: u8) -> &'static str {
    match byte {
        20 => "change_cipher_spec",
        21 => "alert",
        22 => "handshake",
        23 => "application_data",
        _ => "not a TLS record",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_names_or_addresses() {
        assert!(matches!(
            server_name("localhost"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(server_name("not a name").is_err());
    }

    #[test]
    fn plain_text_from_the_server_is_called_not_tls() {
        let err = io::Error::from(io::ErrorKind::InvalidData);
        let text = explain(&err, Path::new("ca.pem"), "localhost", b"HTTP/1.1 400");
        assert!(text.contains("not speaking TLS"), "{text}");
        assert!(text.contains("HTTP/1.1 400"), "{text}");
    }

    #[test]
    fn a_missing_ca_file_is_one_line() {
        let why = client_config(Path::new("/no/such/ca.pem")).unwrap_err();
        assert!(why.contains("/no/such/ca.pem"), "{why}");
    }
}
