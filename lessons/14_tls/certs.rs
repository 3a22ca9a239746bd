//! Lesson 14: the certificates the server makes for itself when given none (with
//! `rcgen`): a small local CA, and a server certificate signed by it for `localhost`,
//! `127.0.0.1` and `::1`. Made once, then reused, so that a client can keep trusting
//! the same CA file across restarts.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// The names the server certificate is valid for: what a local client may dial.
pub const NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The files of a certificate folder.
pub struct CertFiles {
    /// The CA certificate: what a client trusts (`--ca`).
    pub ca: PathBuf,
    /// The server's certificate: what the server presents. (Not the CA's too: a
    /// client must already have the root it trusts; sending it proves nothing.)
    pub chain: PathBuf,
    /// The server's private key (mode 0600).
    pub key: PathBuf,
    /// Made now (true) or found from an earlier run (false).
    pub made_now: bool,
}

fn files(dir: &Path, made_now: bool) -> CertFiles {
    CertFiles {
        ca: workbook::tls::ca_file(dir),
        chain: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        made_now,
    }
}

/// The certificate folder `dir`, made now if it does not exist yet.
///
/// All files are written into a fresh sibling folder which is then renamed to `dir`:
/// rename(2) is atomic, so two servers starting at once can never mix one's CA with
/// the other's certificate; the one that loses the race uses the winner's files.
pub fn ensure(dir: &Path) -> Result<CertFiles, String> {
    let found = files(dir, false);
    if found.ca.exists() && found.chain.exists() && found.key.exists() {
        // Made long ago? An expired certificate would be refused by every client.
        for path in [&found.ca, &found.chain] {
            still_valid(path, dir)?;
        }
        return Ok(found);
    }
    if dir.exists() {
        return Err(format!(
            "{} exists but lacks ca.pem, server.pem or server-key.pem: remove the folder \
             and a new CA is made",
            dir.display()
        ));
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)
        .map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("certs");
    let scratch = parent.join(format!(".{name}.{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir(&scratch)
        .map_err(|err| format!("cannot create {}: {err}", scratch.display()))?;
    let made = make(&scratch).and_then(|()| match fs::rename(&scratch, dir) {
        Ok(()) => Ok(files(dir, true)),
        // Another server made the folder first: use its files.
        Err(_) if found.ca.exists() => Ok(files(dir, false)),
        Err(err) => Err(format!("cannot rename {}: {err}", scratch.display())),
    });
    let _ = fs::remove_dir_all(&scratch);
    made
}

/// Err (with what to do) if a certificate in `path` has expired.
fn still_valid(path: &Path, dir: &Path) -> Result<(), String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let now = OffsetDateTime::now_utc().unix_timestamp();
    for certificate in workbook::tls::load_certificates(path)? {
        let (_, parsed) = X509Certificate::from_der(&certificate)
            .map_err(|err| format!("{} is not a certificate: {err}", path.display()))?;
        let not_after = parsed.validity().not_after;
        if not_after.timestamp() < now {
            return Err(format!(
                "{} expired on {not_after}: remove {} and a new CA and certificate are \
                 made (clients then need the new ca.pem)",
                path.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}

// ANCHOR: make
/// Makes a CA and a server certificate signed by it, in `dir`.
fn make(dir: &Path) -> Result<(), String> {
    let failed = |err: rcgen::Error| format!("cannot make a certificate: {err}");
    let now = OffsetDateTime::now_utc();

    // The CA: a self-signed certificate that may sign others (basicConstraints
    // CA:TRUE, keyUsage keyCertSign), and sign nothing but end entities (path length 0).
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    let ca_key = KeyPair::generate().map_err(failed)?;
    // A name of its own (from its key): two local CAs with one name would look alike
    // to a client, which finds the issuer by name (and then fails: BadSignature).
    let key_bytes = ca_key.public_key_raw();
    let tag: String = key_bytes[key_bytes.len() - 4..]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let name = format!("socket-workbook local CA {tag}");
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::days(1);
    ca.not_after = now + Duration::days(10 * 365);
    let ca_certificate = ca.self_signed(&ca_key).map_err(failed)?;

    // The server's certificate: an end entity (CA:FALSE) for the names a local client
    // dials, usable for a TLS server only (extendedKeyUsage serverAuth).
    let mut server = CertificateParams::new(NAMES.map(String::from).to_vec()).map_err(failed)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = now - Duration::days(1);
    server.not_after = now + Duration::days(365);
    let server_key = KeyPair::generate().map_err(failed)?;
    let issuer = Issuer::new(ca, ca_key);
    let server_certificate = server.signed_by(&server_key, &issuer).map_err(failed)?;

    // The CA's private key is dropped here, never written: nothing, not even this
    // server, can sign another certificate that clients trusting ca.pem accept.
    write(&dir.join("ca.pem"), &ca_certificate.pem(), 0o644)?;
    write(&dir.join("server.pem"), &server_certificate.pem(), 0o644)?;
    write(
        &dir.join("server-key.pem"),
        &server_key.serialize_pem(),
        0o600,
    )
}
// ANCHOR_END: make

fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|err| format!("cannot write {}: {err}", path.display()))
}
