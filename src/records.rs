//! The records the module keeps beside kernel keys, in `user` keys of the
//! same keyring (so they share the key's lifetime and the kernel's
//! permissions, and `keyctl print` shows them): a key's metadata (a chosen
//! `CKA_ID`, whether it was generated here) and X.509 certificates.

/// What we remember beside a kernel key, in a `user` key of the same keyring
/// (so it has the key's lifetime and the kernel's permissions): a `CKA_ID`
/// chosen by the application, and whether the key was generated here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub id: Option<Vec<u8>>,
    pub local: bool,
}

/// Metadata keys are named after the key's public-key ID, which every
/// process derives the same way.
pub const META_PREFIX: &str = "keyring-pkcs11:";

pub fn meta_description(derived_id: &[u8]) -> String {
    format!("{META_PREFIX}{}", hex(derived_id))
}

pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * b.len());
    for x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 15)] as char);
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Meta {
    /// A line-based text record, readable with `keyctl print`.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::from("keyring-pkcs11 1\n");
        if let Some(id) = &self.id {
            s.push_str(&format!("id={}\n", hex(id)));
        }
        if self.local {
            s.push_str("local=1\n");
        }
        s.into_bytes()
    }

    pub fn decode(b: &[u8]) -> Option<Meta> {
        let text = std::str::from_utf8(b).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "keyring-pkcs11 1" {
            return None;
        }
        let mut m = Meta::default();
        for l in lines {
            match l.split_once('=') {
                Some(("id", v)) => m.id = Some(unhex(v)?),
                Some(("local", v)) => m.local = v == "1",
                _ => {}
            }
        }
        Some(m)
    }
}

/// A certificate stored beside the keys, in a `user` key of the token's
/// keyring: a short text header (label, id) then the DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    pub label: String,
    pub id: Vec<u8>,
    pub der: Vec<u8>,
}

pub const CERT_PREFIX: &str = "keyring-pkcs11:cert:";
const CERT_MAGIC: &str = "keyring-pkcs11-cert 1\n";

impl CertRecord {
    /// Named after the certificate's SHA-1, so the same certificate is
    /// stored once per keyring.
    pub fn description(&self) -> String {
        use sha1::Digest;
        format!("{CERT_PREFIX}{}", hex(&sha1::Sha1::digest(&self.der)))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{CERT_MAGIC}label={}\nid={}\n\n",
            hex(self.label.as_bytes()),
            hex(&self.id)
        )
        .into_bytes();
        out.extend_from_slice(&self.der);
        out
    }

    pub fn decode(b: &[u8]) -> Option<CertRecord> {
        let rest = b.strip_prefix(CERT_MAGIC.as_bytes())?;
        let split = rest.windows(2).position(|w| w == b"\n\n")?;
        let head = std::str::from_utf8(&rest[..split]).ok()?;
        let mut r = CertRecord {
            label: String::new(),
            id: Vec::new(),
            der: rest[split + 2..].to_vec(),
        };
        for l in head.lines() {
            match l.split_once('=') {
                Some(("label", v)) => r.label = String::from_utf8(unhex(v)?).ok()?,
                Some(("id", v)) => r.id = unhex(v)?,
                _ => {}
            }
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let m = Meta {
            id: Some(vec![1, 0xab]),
            local: true,
        };
        assert_eq!(Meta::decode(&m.encode()), Some(m));
        assert_eq!(Meta::decode(b"something else"), None);
        assert_eq!(meta_description(&[0xde, 0xad]), "keyring-pkcs11:dead");
        let all: Vec<u8> = (0..=255).collect();
        let want: String = all.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(hex(&all), want);
        assert_eq!(unhex(&want), Some(all));
        assert_eq!(hex(&[]), "");
        let c = CertRecord {
            label: "web cert".into(),
            id: vec![1, 2],
            der: vec![0x30, 0x0a, 0x0a, 0x00],
        };
        assert_eq!(CertRecord::decode(&c.encode()), Some(c.clone()));
        assert!(c.description().starts_with(CERT_PREFIX));
    }
}
