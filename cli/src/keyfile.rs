//! Turning a private key file into what the kernel loads: unencrypted PKCS#8
//! DER of an RSA key (`C_CreateObject` takes it in `CKA_VALUE`).
//!
//! Accepted: PKCS#8 (`BEGIN PRIVATE KEY`, or DER), PKCS#1 (`BEGIN RSA
//! PRIVATE KEY`, or DER), encrypted PKCS#8 (`BEGIN ENCRYPTED PRIVATE KEY`,
//! or DER; PBES2 with PBKDF2 or scrypt and AES or 3DES) and OpenSSH private
//! keys (`BEGIN OPENSSH PRIVATE KEY`), with or without a passphrase. Every
//! input is decoded into an RSA key, checked (`RsaPrivateKey::validate`) and
//! re-encoded as plain PKCS#8 v1, the only form the kernel's parser takes.
//!
//! Key material only ever lives in `Zeroizing` buffers or in RustCrypto and
//! `ssh-key` types that wipe themselves; passphrases are asked for only when
//! the input is encrypted, and are wiped after use too.

use pkcs8::der::{Decode, pem};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::EncodePrivateKey;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use std::fmt;
use zeroize::Zeroizing;

/// The `rsaEncryption` OID: the only algorithm the kernel's PKCS#8 parser takes.
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

/// The forms a private key can come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pkcs8,
    Pkcs1,
    EncryptedPkcs8,
    OpenSsh,
    EncryptedOpenSsh,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Pkcs8 => "PKCS#8",
            Format::Pkcs1 => "PKCS#1",
            Format::EncryptedPkcs8 => "encrypted PKCS#8",
            Format::OpenSsh => "OpenSSH",
            Format::EncryptedOpenSsh => "passphrase-protected OpenSSH",
        })
    }
}

/// A key ready for the kernel.
pub struct Imported {
    /// Unencrypted PKCS#8 v1 DER of the RSA key.
    pub pkcs8: Zeroizing<Vec<u8>>,
    pub format: Format,
    /// The OpenSSH comment, if the file had a non-empty one.
    pub comment: Option<String>,
    pub bits: usize,
    /// Big-endian modulus and public exponent, without leading zeros.
    pub modulus: Vec<u8>,
    pub exponent: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// A private key, but not RSA: the kernel cannot hold it.
    NotRsa(String),
    /// The passphrase did not decrypt the key.
    WrongPassphrase,
    /// No passphrase could be had (the callback's own explanation).
    NoPassphrase(String),
    /// A recognised form this tool cannot read, with what to do instead.
    Unsupported(String),
    /// Not a private key, or a damaged one.
    Invalid(String),
}

impl fmt::Debug for Imported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imported")
            .field("format", &self.format)
            .field("comment", &self.comment)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::NotRsa(alg) => write!(
                f,
                "this is {alg} private key; the kernel can hold only RSA private keys"
            ),
            ImportError::WrongPassphrase => f.write_str("wrong passphrase"),
            ImportError::NoPassphrase(why) => f.write_str(why),
            ImportError::Unsupported(why) => f.write_str(why),
            ImportError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ImportError {}

/// Supplies passphrases: called with the attempt number (1, 2, …) each time
/// one is needed, until it returns an error (e.g. `WrongPassphrase` once it
/// has no better answer to give).
pub type PassphraseSource<'a> = dyn FnMut(u32) -> Result<Zeroizing<String>, ImportError> + 'a;

/// Decodes a private key file of any supported form.
pub fn decode(
    input: &[u8],
    passphrase: &mut PassphraseSource<'_>,
) -> Result<Imported, ImportError> {
    if let Some(text) = pem_text(input) {
        return decode_text(text, passphrase);
    }
    decode_der(input, passphrase)
}

/// The input as text, if it looks like PEM (or another text format).
fn pem_text(input: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(input).ok()?;
    let t = text.trim_start();
    (t.starts_with("-----BEGIN ")
        || t.contains("\n-----BEGIN ")
        || t.starts_with("ssh-")
        || t.starts_with("ecdsa-")
        || t.starts_with("sk-")
        || t.starts_with("PuTTY-User-Key-File")
        || t.starts_with("---- BEGIN SSH2"))
    .then_some(text)
}

/// One `-----BEGIN LABEL-----` … `-----END LABEL-----` block.
struct Block<'a> {
    label: &'a str,
    text: &'a str,
}

fn blocks(text: &str) -> Vec<Block<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let Some(end_label) = after.find("-----") else {
            break;
        };
        let label = &after[..end_label];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = rest[start..].find(&end_marker) else {
            break;
        };
        let stop = start + end + end_marker.len();
        out.push(Block {
            label,
            text: &rest[start..stop],
        });
        rest = &rest[stop..];
    }
    out
}

fn decode_text(text: &str, passphrase: &mut PassphraseSource<'_>) -> Result<Imported, ImportError> {
    let t = text.trim_start();
    if t.starts_with("PuTTY-User-Key-File") {
        return Err(ImportError::Unsupported(
            "this is a PuTTY key file; convert it first: puttygen KEY.ppk -O private-openssh -o KEY"
                .into(),
        ));
    }
    if t.starts_with("---- BEGIN SSH2") {
        return Err(ImportError::Invalid(
            "this is an SSH2 public key, not a private key".into(),
        ));
    }
    if ["ssh-", "ecdsa-", "sk-"].iter().any(|p| t.starts_with(p)) {
        return Err(ImportError::Invalid(
            "this is an OpenSSH public key (a .pub file); give the private key file instead (e.g. ~/.ssh/id_rsa, not ~/.ssh/id_rsa.pub)".into(),
        ));
    }
    let blocks = blocks(text);
    let mut others = Vec::new();
    for b in &blocks {
        match b.label {
            "OPENSSH PRIVATE KEY" => return decode_openssh(b.text, passphrase),
            "PRIVATE KEY" => {
                let der = pem_block(b)?;
                return from_pkcs8(&der, Format::Pkcs8);
            }
            "ENCRYPTED PRIVATE KEY" => {
                let der = pem_block(b)?;
                return decrypt_pkcs8(&der, passphrase);
            }
            "RSA PRIVATE KEY" => {
                if b.text.contains("Proc-Type:") || b.text.contains("DEK-Info:") {
                    return Err(ImportError::Unsupported(
                        "this is a PEM key encrypted in OpenSSL's legacy format (Proc-Type/DEK-Info); convert it to encrypted PKCS#8 first: openssl pkcs8 -topk8 -in KEY -out KEY.p8 (asks for the old and a new passphrase)".into(),
                    ));
                }
                let der = pem_block(b)?;
                return from_pkcs1(&der);
            }
            "EC PRIVATE KEY" => return Err(ImportError::NotRsa("an EC (ECDSA)".into())),
            "DSA PRIVATE KEY" => return Err(ImportError::NotRsa("a DSA".into())),
            l => others.push(l),
        }
    }
    Err(ImportError::Invalid(match others.first() {
        Some(l) if l.contains("CERTIFICATE") => {
            "this file holds a certificate, not a private key (certificates go with --cert)".into()
        }
        Some(l) if l.contains("PUBLIC KEY") => {
            "this file holds a public key, not a private key".into()
        }
        Some(l) => format!("no private key in this file (found a PEM block \"{l}\")"),
        None => "no private key in this file (no complete PEM block)".into(),
    }))
}

fn pem_block(b: &Block<'_>) -> Result<Zeroizing<Vec<u8>>, ImportError> {
    let (_, der) = pem::decode_vec(b.text.as_bytes())
        .map_err(|e| ImportError::Invalid(format!("damaged PEM block \"{}\": {e}", b.label)))?;
    Ok(Zeroizing::new(der))
}

fn decode_der(der: &[u8], passphrase: &mut PassphraseSource<'_>) -> Result<Imported, ImportError> {
    if pkcs8::PrivateKeyInfo::from_der(der).is_ok() {
        return from_pkcs8(der, Format::Pkcs8);
    }
    if pkcs8::EncryptedPrivateKeyInfo::from_der(der).is_ok() {
        return decrypt_pkcs8(der, passphrase);
    }
    if pkcs1::RsaPrivateKey::from_der(der).is_ok() {
        return from_pkcs1(der);
    }
    if der.starts_with(b"openssh-key-v1\0") {
        let key = ssh_key::PrivateKey::from_bytes(der)
            .map_err(|e| ImportError::Invalid(format!("damaged OpenSSH private key: {e}")))?;
        return from_openssh(key, passphrase);
    }
    Err(ImportError::Invalid(
        "not a private key in a known format (PEM or DER PKCS#8, PKCS#1, encrypted PKCS#8, or OpenSSH)"
            .into(),
    ))
}

/// A readable name for a PKCS#8 algorithm that is not RSA.
fn algorithm_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.2.1" => "an EC (ECDSA)".into(),
        "1.3.101.112" => "an Ed25519".into(),
        "1.3.101.113" => "an Ed448".into(),
        "1.3.101.110" => "an X25519".into(),
        "1.3.101.111" => "an X448".into(),
        "1.2.840.10040.4.1" => "a DSA".into(),
        "1.2.840.113549.1.3.1" | "1.2.840.10046.2.1" => "a Diffie-Hellman".into(),
        "1.2.643.7.1.1.1.1" | "1.2.643.7.1.1.1.2" => "a GOST".into(),
        "1.2.156.10197.1.301" => "an SM2".into(),
        other => format!("a non-RSA (algorithm {other})"),
    }
}

fn from_pkcs8(der: &[u8], format: Format) -> Result<Imported, ImportError> {
    let info = pkcs8::PrivateKeyInfo::from_der(der)
        .map_err(|e| ImportError::Invalid(format!("damaged PKCS#8 private key: {e}")))?;
    let oid = info.algorithm.oid.to_string();
    if oid == "1.2.840.113549.1.1.10" {
        return Err(ImportError::Unsupported(
            "this is an RSA-PSS-restricted key (id-RSASSA-PSS); the kernel loads only plain RSA (rsaEncryption) keys".into(),
        ));
    }
    if oid != RSA_ENCRYPTION {
        return Err(ImportError::NotRsa(algorithm_name(&oid)));
    }
    let key = rsa::RsaPrivateKey::from_pkcs1_der(info.private_key)
        .map_err(|e| ImportError::Invalid(format!("damaged RSA key inside PKCS#8: {e}")))?;
    finish(key, format, None)
}

fn from_pkcs1(der: &[u8]) -> Result<Imported, ImportError> {
    let key = rsa::RsaPrivateKey::from_pkcs1_der(der)
        .map_err(|e| ImportError::Invalid(format!("damaged PKCS#1 RSA private key: {e}")))?;
    finish(key, Format::Pkcs1, None)
}

fn decrypt_pkcs8(
    der: &[u8],
    passphrase: &mut PassphraseSource<'_>,
) -> Result<Imported, ImportError> {
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(der)
        .map_err(|e| ImportError::Invalid(format!("damaged encrypted PKCS#8 key: {e}")))?;
    let scheme = info.encryption_algorithm;
    let mut attempt = 1;
    loop {
        let pass = passphrase(attempt)?;
        let mut buf = Zeroizing::new(info.encrypted_data.to_vec());
        match scheme.decrypt_in_place(pass.as_bytes(), &mut buf) {
            Ok(plain) => {
                // A wrong passphrase can still leave valid padding (about
                // one time in 256): then the plaintext is not DER.
                if pkcs8::PrivateKeyInfo::from_der(plain).is_ok() {
                    return from_pkcs8(plain, Format::EncryptedPkcs8);
                }
            }
            // A wrong key shows as bad padding; pkcs5 0.7 reports that as
            // EncryptFailed even when decrypting.
            Err(pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed) => {}
            Err(pkcs8::pkcs5::Error::NoPbes1CryptSupport) => {
                return Err(ImportError::Unsupported(
                    "this key is encrypted with old PKCS#5 v1.5 (PBES1) encryption; re-encrypt it: openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY -out KEY.p8".into(),
                ));
            }
            Err(e) => {
                return Err(ImportError::Unsupported(format!(
                    "cannot decrypt this key ({e}); re-encrypt it: openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY -out KEY.p8"
                )));
            }
        }
        attempt += 1;
    }
}

fn decode_openssh(
    text: &str,
    passphrase: &mut PassphraseSource<'_>,
) -> Result<Imported, ImportError> {
    let key = ssh_key::PrivateKey::from_openssh(text).map_err(|e| match e {
        // RSA and Ed25519 are always understood; name the other kinds.
        ssh_key::Error::AlgorithmUnknown | ssh_key::Error::AlgorithmUnsupported { .. } => {
            ImportError::NotRsa(
                openssh_key_type(text).unwrap_or_else(|| "a non-RSA OpenSSH".to_string()),
            )
        }
        e => ImportError::Invalid(format!("damaged OpenSSH private key: {e}")),
    })?;
    from_openssh(key, passphrase)
}

/// The kind of key an OpenSSH private key file holds, from the type named in
/// its clear-text public part (`ecdsa-sha2-nistp256`, …), for the message.
/// The text is a whole private key (of a kind we do not import): every
/// copy of it made here is wiped.
fn openssh_key_type(text: &str) -> Option<String> {
    let mut b64 = Zeroizing::new(String::with_capacity(text.len()));
    for l in text.lines().filter(|l| !l.starts_with("-----")) {
        b64.push_str(l);
    }
    let mut pem_text = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 64));
    pem_text.push_str("-----BEGIN X-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem_text.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        pem_text.push('\n');
    }
    pem_text.push_str("-----END X-----\n");
    let blob = Zeroizing::new(pem::decode_vec(pem_text.as_bytes()).ok()?.1);
    [
        ("sk-ecdsa-sha2-nistp256@openssh.com", "a security-key ECDSA"),
        ("sk-ssh-ed25519@openssh.com", "a security-key Ed25519"),
        ("ecdsa-sha2-nistp256", "an ECDSA"),
        ("ecdsa-sha2-nistp384", "an ECDSA"),
        ("ecdsa-sha2-nistp521", "an ECDSA"),
        ("ssh-dss", "a DSA"),
    ]
    .into_iter()
    .find(|(name, _)| blob.windows(name.len()).any(|w| w == name.as_bytes()))
    .map(|(name, kind)| format!("{kind} ({name})"))
}

fn from_openssh(
    key: ssh_key::PrivateKey,
    passphrase: &mut PassphraseSource<'_>,
) -> Result<Imported, ImportError> {
    // The public half is never encrypted: refuse other key types before
    // asking for a passphrase.
    let alg = key.algorithm();
    if !matches!(alg, ssh_key::Algorithm::Rsa { .. }) {
        let name = match alg {
            ssh_key::Algorithm::Ed25519 => "an Ed25519 (ssh-ed25519)".to_string(),
            ssh_key::Algorithm::Ecdsa { .. } => format!("an ECDSA ({alg})"),
            ssh_key::Algorithm::Dsa => "a DSA (ssh-dss)".to_string(),
            ssh_key::Algorithm::SkEd25519 | ssh_key::Algorithm::SkEcdsaSha2NistP256 => {
                format!("a security-key ({alg})")
            }
            _ => format!("a non-RSA ({alg})"),
        };
        return Err(ImportError::NotRsa(name));
    }
    let (key, format) = if key.is_encrypted() {
        let mut attempt = 1;
        loop {
            let pass = passphrase(attempt)?;
            match key.decrypt(pass.as_bytes()) {
                Ok(k) => break (k, Format::EncryptedOpenSsh),
                Err(ssh_key::Error::Crypto) => attempt += 1,
                Err(e) => {
                    return Err(ImportError::Unsupported(format!(
                        "cannot decrypt this OpenSSH key: {e}"
                    )));
                }
            }
        }
    } else {
        (key, Format::OpenSsh)
    };
    let comment = Some(key.comment().trim().to_string()).filter(|c| !c.is_empty());
    let ssh_key::private::KeypairData::Rsa(pair) = key.key_data() else {
        return Err(ImportError::Invalid(
            "OpenSSH key data does not match its public key type".into(),
        ));
    };
    let int = |m: &ssh_key::Mpint, what: &str| {
        m.as_positive_bytes()
            .map(rsa::BigUint::from_bytes_be)
            .ok_or_else(|| ImportError::Invalid(format!("OpenSSH RSA key: bad {what}")))
    };
    let rsa_key = rsa::RsaPrivateKey::from_components(
        int(&pair.public.n, "modulus")?,
        int(&pair.public.e, "public exponent")?,
        int(&pair.private.d, "private exponent")?,
        vec![
            int(&pair.private.p, "prime")?,
            int(&pair.private.q, "prime")?,
        ],
    )
    .map_err(|e| ImportError::Invalid(format!("inconsistent OpenSSH RSA key: {e}")))?;
    finish(rsa_key, format, comment)
}

/// Checks the key and encodes it the one way the kernel reads.
fn finish(
    key: rsa::RsaPrivateKey,
    format: Format,
    comment: Option<String>,
) -> Result<Imported, ImportError> {
    if key.primes().len() != 2 {
        return Err(ImportError::Unsupported(
            "multi-prime RSA keys cannot be loaded into the kernel".into(),
        ));
    }
    key.validate()
        .map_err(|e| ImportError::Invalid(format!("inconsistent RSA key: {e}")))?;
    let doc = key
        .to_pkcs8_der()
        .map_err(|e| ImportError::Invalid(format!("cannot encode the key as PKCS#8: {e}")))?;
    Ok(Imported {
        pkcs8: Zeroizing::new(doc.as_bytes().to_vec()),
        format,
        comment,
        bits: key.n().bits(),
        modulus: key.n().to_bytes_be(),
        exponent: key.e().to_bytes_be(),
    })
}

/// An X.509 certificate to go with a key.
pub struct Certificate {
    pub der: Vec<u8>,
    pub subject: Vec<u8>,
    pub issuer: Vec<u8>,
    pub serial: Vec<u8>,
    /// The certified public key, if it is RSA: (modulus, exponent),
    /// big-endian without leading zeros.
    pub rsa_public: Option<(Vec<u8>, Vec<u8>)>,
}

/// Reads a certificate in PEM or DER.
pub fn certificate(input: &[u8]) -> Result<Certificate, ImportError> {
    use pkcs8::der::Encode;
    let der = match std::str::from_utf8(input)
        .ok()
        .filter(|t| t.contains("-----BEGIN "))
    {
        Some(text) => {
            let b = blocks(text)
                .into_iter()
                .find(|b| b.label == "CERTIFICATE" || b.label == "X509 CERTIFICATE")
                .ok_or_else(|| ImportError::Invalid("no \"BEGIN CERTIFICATE\" block".into()))?;
            pem::decode_vec(b.text.as_bytes())
                .map_err(|e| ImportError::Invalid(format!("damaged certificate PEM: {e}")))?
                .1
        }
        None => input.to_vec(),
    };
    let cert = x509_cert::Certificate::from_der(&der)
        .map_err(|e| ImportError::Invalid(format!("not an X.509 certificate: {e}")))?;
    let tbs = &cert.tbs_certificate;
    let enc = |r: pkcs8::der::Result<Vec<u8>>| {
        r.map_err(|e| ImportError::Invalid(format!("certificate: {e}")))
    };
    let spki = &tbs.subject_public_key_info;
    let rsa_public = (spki.algorithm.oid.to_string() == RSA_ENCRYPTION)
        .then(|| spki.subject_public_key.as_bytes())
        .flatten()
        .and_then(|b| pkcs1::RsaPublicKey::from_der(b).ok())
        .map(|k| {
            (
                k.modulus.as_bytes().to_vec(),
                k.public_exponent.as_bytes().to_vec(),
            )
        });
    Ok(Certificate {
        subject: enc(tbs.subject.to_der())?,
        issuer: enc(tbs.issuer.to_der())?,
        serial: enc(tbs.serial_number.to_der())?,
        rsa_public,
        der,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{DecodePrivateKey, LineEnding};

    fn key() -> rsa::RsaPrivateKey {
        rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap()
    }

    fn no_pass(_: u32) -> Result<Zeroizing<String>, ImportError> {
        panic!("asked for a passphrase for an unencrypted key")
    }

    fn check(k: &rsa::RsaPrivateKey, got: &Imported, format: Format) {
        assert_eq!(got.format, format);
        assert_eq!(&rsa::RsaPrivateKey::from_pkcs8_der(&got.pkcs8).unwrap(), k);
        assert_eq!(got.bits, 2048);
        assert_eq!(got.modulus, k.n().to_bytes_be());
    }

    #[test]
    fn plain_forms_pem_and_der() {
        let k = key();
        let p8 = k.to_pkcs8_pem(LineEnding::LF).unwrap();
        check(
            &k,
            &decode(p8.as_bytes(), &mut no_pass).unwrap(),
            Format::Pkcs8,
        );
        let p8d = k.to_pkcs8_der().unwrap();
        check(
            &k,
            &decode(p8d.as_bytes(), &mut no_pass).unwrap(),
            Format::Pkcs8,
        );
        let p1 = k.to_pkcs1_pem(LineEnding::LF).unwrap();
        assert!(p1.contains("BEGIN RSA PRIVATE KEY"));
        check(
            &k,
            &decode(p1.as_bytes(), &mut no_pass).unwrap(),
            Format::Pkcs1,
        );
        let p1d = k.to_pkcs1_der().unwrap();
        check(
            &k,
            &decode(p1d.as_bytes(), &mut no_pass).unwrap(),
            Format::Pkcs1,
        );
        // Text around the block, and other blocks before it, are skipped.
        let mixed = format!(
            "Bag Attributes\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n{}",
            &*p8
        );
        check(
            &k,
            &decode(mixed.as_bytes(), &mut no_pass).unwrap(),
            Format::Pkcs8,
        );
    }

    #[test]
    fn encrypted_pkcs8_asks_until_right() {
        let k = key();
        // PBKDF2-SHA256 + AES-256-CBC, as `openssl pkcs8 -topk8 -v2 aes-256-cbc`.
        let plain = k.to_pkcs8_der().unwrap();
        let params =
            pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, &[1; 16], &[2; 16])
                .unwrap();
        let enc = pkcs8::PrivateKeyInfo::from_der(plain.as_bytes())
            .unwrap()
            .encrypt_with_params(params, "s3cret")
            .unwrap()
            .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
            .unwrap();
        let mut tries = Vec::new();
        let got = decode(enc.as_bytes(), &mut |n| {
            tries.push(n);
            Ok(Zeroizing::new(if n < 3 { "nope" } else { "s3cret" }.into()))
        })
        .unwrap();
        check(&k, &got, Format::EncryptedPkcs8);
        assert_eq!(tries, [1, 2, 3]);
        // A source that gives up ends it with its own error.
        let err = decode(enc.as_bytes(), &mut |n| {
            if n == 1 {
                Ok(Zeroizing::new("wrong".into()))
            } else {
                Err(ImportError::WrongPassphrase)
            }
        });
        assert_eq!(err.err(), Some(ImportError::WrongPassphrase));
    }

    fn openssh(k: &rsa::RsaPrivateKey, comment: &str) -> ssh_key::PrivateKey {
        let m = |b: rsa::BigUint| ssh_key::Mpint::from_positive_bytes(&b.to_bytes_be()).unwrap();
        let p = &k.primes()[0];
        let q = &k.primes()[1];
        let iqmp = q.clone().modpow(&(p - 2u32), p);
        let pair = ssh_key::private::RsaKeypair {
            public: ssh_key::public::RsaPublicKey {
                e: m(k.e().clone()),
                n: m(k.n().clone()),
            },
            private: ssh_key::private::RsaPrivateKey {
                d: m(k.d().clone()),
                iqmp: m(iqmp),
                p: m(p.clone()),
                q: m(q.clone()),
            },
        };
        ssh_key::PrivateKey::new(ssh_key::private::KeypairData::Rsa(pair), comment).unwrap()
    }

    #[test]
    fn openssh_plain_and_encrypted() {
        let k = key();
        let plain = openssh(&k, "me@host").to_openssh(LineEnding::LF).unwrap();
        let got = decode(plain.as_bytes(), &mut no_pass).unwrap();
        check(&k, &got, Format::OpenSsh);
        assert_eq!(got.comment.as_deref(), Some("me@host"));
        let enc = openssh(&k, "")
            .encrypt(&mut rsa::rand_core::OsRng, "pw")
            .unwrap()
            .to_openssh(LineEnding::LF)
            .unwrap();
        let got = decode(enc.as_bytes(), &mut |n| {
            Ok(Zeroizing::new(if n == 1 { "bad" } else { "pw" }.into()))
        })
        .unwrap();
        check(&k, &got, Format::EncryptedOpenSsh);
        assert_eq!(got.comment, None);
    }

    #[test]
    fn other_key_types_and_files_are_refused_clearly() {
        // RFC 8410's Ed25519 example key.
        let ed = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        assert!(
            matches!(decode(ed.as_bytes(), &mut no_pass), Err(ImportError::NotRsa(a)) if a.contains("Ed25519"))
        );
        // ssh-keygen -t ed25519 -N '' -C test
        let ssh = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACA2BciYMF1tzqVonPhBOUGge/q2qb75CLz8sEQ+CWcYcgAAAIgN1+v1Ddfr
9QAAAAtzc2gtZWQyNTUxOQAAACA2BciYMF1tzqVonPhBOUGge/q2qb75CLz8sEQ+CWcYcg
AAAEAZ2XmuV26QLj2h1JvkF+8qtiPlpz7d339QoRZ4DuwDWTYFyJgwXW3OpWic+EE5QaB7
+rapvvkIvPywRD4JZxhyAAAABHRlc3QB
-----END OPENSSH PRIVATE KEY-----
";
        let err = decode(ssh.as_bytes(), &mut no_pass).err().unwrap();
        assert!(matches!(&err, ImportError::NotRsa(a) if a.contains("Ed25519")));
        assert!(
            err.to_string()
                .contains("the kernel can hold only RSA private keys")
        );
        // ssh-keygen -t ecdsa; openssl ecparam -genkey (SEC1), then pkcs8 -topk8.
        let ssh_ec = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAaAAAABNlY2RzYS
1zaGEyLW5pc3RwMjU2AAAACG5pc3RwMjU2AAAAQQTylcnJ6FrlqgZHm0ponLpcwVpTy9D8
O7Dapkfi64NIme8vewtbeWVEzUQ//FQCStK7+0xkLBnrK/q4Kmlu925LAAAAoA57Fv0Oex
b9AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBPKVycnoWuWqBkeb
SmiculzBWlPL0Pw7sNqmR+Lrg0iZ7y97C1t5ZUTNRD/8VAJK0rv7TGQsGesr+rgqaW73bk
sAAAAhAKv0Vw/3eOA4s5wDydtrUfwpezJn5bExCnQbWiyF+x51AAAAAXQBAgMEBQY=
-----END OPENSSH PRIVATE KEY-----
";
        let sec1 = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIFKuu5oamNc25NrKXwdz7jN+rdOtz/kQT8sp1CxjGBNWoAoGCCqGSM49
AwEHoUQDQgAE2ikM1tG5ovSA9wJAJNKopUqxIBbB8lWVbxwYOm5FvWpH21XWBiP6
iqvRaIJWvlnn7+1v1beHBMYGhKhOTMxIRQ==
-----END EC PRIVATE KEY-----
";
        let p8_ec = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgUq67mhqY1zbk2spf
B3PuM36t063P+RBPyynULGMYE1ahRANCAATaKQzW0bmi9ID3AkAk0qilSrEgFsHy
VZVvHBg6bkW9akfbVdYGI/qKq9Fogla+Wefv7W/Vt4cExgaEqE5MzEhF
-----END PRIVATE KEY-----
";
        for ec in [ssh_ec, sec1, p8_ec] {
            let err = decode(ec.as_bytes(), &mut no_pass).err().unwrap();
            assert!(
                matches!(&err, ImportError::NotRsa(a) if a.contains("EC")),
                "{err}"
            );
        }
        assert!(matches!(
            decode(b"ssh-rsa AAAAB3NzaC1yc2E= me", &mut no_pass),
            Err(ImportError::Invalid(m)) if m.contains(".pub")
        ));
        assert!(matches!(
            decode(b"\x01\x02garbage", &mut no_pass),
            Err(ImportError::Invalid(_))
        ));
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            decode(legacy.as_bytes(), &mut no_pass),
            Err(ImportError::Unsupported(_))
        ));
    }
}
