//! The records the module keeps beside kernel keys, in `user` keys of the
//! same keyring (so they share the key's lifetime and the kernel's
//! permissions, and `keyctl print` shows them): a key's record (a chosen
//! `CKA_ID`, whether it was generated here, the attributes its creator set —
//! see `object::KeyRecord`) and X.509 certificates. Their wire formats and
//! names live here; who may be believed is `module::discovery`'s business.

use crate::crypto::pubkey::RsaPublic;
use crate::object::rules::{self, Kind};
use crate::object::{Class, KeyRecord};
use cryptoki_sys::*;

/// Metadata records are named after the key's derived ID (SHA-1 of its
/// public key), which every process derives the same way.
pub const META_PREFIX: &str = "keyring-pkcs11:";

pub fn meta_description(derived_id: &[u8]) -> String {
    format!("{META_PREFIX}{}", hex(derived_id))
}

/// The derived ID a metadata record's description names, if it is in its
/// one canonical form (40 lowercase hex digits): another spelling of the
/// same ID (uppercase, padding) is not ours and is ignored.
pub fn meta_id(description: &str) -> Option<Vec<u8>> {
    let h = description.strip_prefix(META_PREFIX)?;
    canonical_sha1(h)
}

fn canonical_sha1(h: &str) -> Option<Vec<u8>> {
    (h.len() == 40 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| unhex(h))
        .flatten()
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

const META_MAGIC: &str = "keyring-pkcs11 1";

/// A key's record as text, readable with `keyctl print`:
/// ```text
/// keyring-pkcs11 1
/// id=01ab
/// local=1
/// label=776562
/// n=c3e1…
/// e=010001
/// private.sign=0
/// private.allowed_mechanisms=40,1
/// public.verify=1
/// ```
/// Lines a reader does not know are ignored, so later versions can add some.
pub fn encode_key_record(r: &KeyRecord) -> Vec<u8> {
    let mut s = format!("{META_MAGIC}\n");
    if let Some(id) = &r.id {
        s.push_str(&format!("id={}\n", hex(id)));
    }
    if r.local {
        s.push_str("local=1\n");
    }
    if let Some(l) = &r.label {
        s.push_str(&format!("label={}\n", hex(l.as_bytes())));
    }
    if let Some(p) = &r.public {
        s.push_str(&format!("n={}\ne={}\n", hex(&p.modulus), hex(&p.exponent)));
    }
    for ((class, t), v) in &r.set {
        let (Some(name), Some(prefix)) = (rules::name(*t), class_name(*class)) else {
            continue;
        };
        let value = match rules::by_name(*class, name).map(|(_, k)| k) {
            Some(Kind::Bool) => (if v == &[CK_TRUE] { "1" } else { "0" }).to_string(),
            Some(Kind::Mechanisms) => v
                .chunks_exact(std::mem::size_of::<CK_MECHANISM_TYPE>())
                .map(|c| {
                    format!(
                        "{:x}",
                        CK_MECHANISM_TYPE::from_ne_bytes(c.try_into().expect("one word"))
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
            _ => hex(v),
        };
        s.push_str(&format!("{prefix}.{name}={value}\n"));
    }
    s.into_bytes()
}

/// Reads a key's record; `None` if it is not one (or is damaged).
pub fn decode_key_record(b: &[u8]) -> Option<KeyRecord> {
    let text = std::str::from_utf8(b).ok()?;
    let mut lines = text.lines();
    if lines.next()? != META_MAGIC {
        return None;
    }
    let mut r = KeyRecord::default();
    for l in lines {
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        match k {
            "id" => r.id = Some(unhex(v)?),
            "local" => r.local = v == "1",
            "label" => r.label = Some(String::from_utf8(unhex(v)?).ok()?),
            "n" => r.public.get_or_insert_with(empty_public).modulus = unhex(v)?,
            "e" => r.public.get_or_insert_with(empty_public).exponent = unhex(v)?,
            _ => {
                let Some((prefix, name)) = k.split_once('.') else {
                    continue;
                };
                let Some(class) = [Class::Private, Class::Public]
                    .into_iter()
                    .find(|c| class_name(*c) == Some(prefix))
                else {
                    continue;
                };
                let Some((t, kind)) = rules::by_name(class, name) else {
                    continue;
                };
                let value = match kind {
                    Kind::Bool => vec![(v == "1") as CK_BBOOL],
                    Kind::Mechanisms if v.is_empty() => Vec::new(),
                    Kind::Mechanisms => v
                        .split(',')
                        .map(|m| CK_MECHANISM_TYPE::from_str_radix(m, 16).ok())
                        .collect::<Option<Vec<_>>>()?
                        .into_iter()
                        .flat_map(|m| m.to_ne_bytes())
                        .collect(),
                    _ => unhex(v)?,
                };
                if !rules::valid(kind, &value) {
                    return None;
                }
                r.set.insert((class, t), value);
            }
        }
    }
    Some(r)
}

fn empty_public() -> RsaPublic {
    RsaPublic {
        modulus: Vec::new(),
        exponent: Vec::new(),
    }
}

fn class_name(c: Class) -> Option<&'static str> {
    match c {
        Class::Private => Some("private"),
        Class::Public => Some("public"),
        Class::Certificate => None,
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

/// Whether a certificate record's description is the one canonical name of
/// the certificate it holds.
pub fn cert_named_right(description: &str, der: &[u8]) -> bool {
    use sha1::Digest;
    description
        .strip_prefix(CERT_PREFIX)
        .and_then(canonical_sha1)
        .is_some_and(|h| h == sha1::Sha1::digest(der).as_slice())
}
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
    fn key_records_round_trip_and_ignore_what_they_do_not_know() {
        let mut r = KeyRecord {
            id: Some(vec![1, 0xab]),
            local: true,
            label: Some("web\nkey".into()),
            public: Some(RsaPublic {
                modulus: vec![0xc3; 128],
                exponent: vec![1, 0, 1],
            }),
            ..KeyRecord::default()
        };
        r.set.insert((Class::Private, CKA_SIGN), vec![0]);
        r.set.insert((Class::Public, CKA_VERIFY), vec![1]);
        r.set.insert(
            (Class::Private, CKA_ALLOWED_MECHANISMS),
            [CKM_SHA256_RSA_PKCS, CKM_RSA_PKCS_PSS]
                .iter()
                .flat_map(|m| m.to_ne_bytes())
                .collect(),
        );
        r.set
            .insert((Class::Private, CKA_START_DATE), b"20261130".to_vec());
        let text = encode_key_record(&r);
        let s = String::from_utf8(text.clone()).unwrap();
        assert!(s.contains("private.sign=0\n"), "{s}");
        assert!(s.contains("private.allowed_mechanisms=40,d\n"), "{s}");
        assert_eq!(decode_key_record(&text), Some(r.clone()));
        let mut later = text.clone();
        later.extend_from_slice(b"private.something_new=1\nfuture=x\n");
        assert_eq!(decode_key_record(&later), Some(r));
        assert_eq!(decode_key_record(b"something else"), None);
        // A value of the wrong type is a damaged record, not a default.
        assert_eq!(
            decode_key_record(b"keyring-pkcs11 1\nprivate.start_date=31\n"),
            None
        );
        // The format of earlier versions still reads.
        assert_eq!(
            decode_key_record(b"keyring-pkcs11 1\nid=0102\nlocal=1\n"),
            Some(KeyRecord {
                id: Some(vec![1, 2]),
                local: true,
                ..KeyRecord::default()
            })
        );
    }

    #[test]
    fn names_are_canonical() {
        let id = [0xabu8; 20];
        assert_eq!(
            meta_description(&id),
            format!("keyring-pkcs11:{}", "ab".repeat(20))
        );
        assert_eq!(meta_id(&meta_description(&id)), Some(id.to_vec()));
        assert_eq!(
            meta_id(&format!("keyring-pkcs11:{}", "AB".repeat(20))),
            None
        );
        assert_eq!(meta_id("keyring-pkcs11:dead"), None);
        assert_eq!(
            meta_id(&format!("keyring-pkcs11:cert:{}", "ab".repeat(20))),
            None
        );
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
        assert!(cert_named_right(&c.description(), &c.der));
        assert!(!cert_named_right(&c.description().to_uppercase(), &c.der));
        assert!(!cert_named_right(&c.description(), b"other"));
    }
}
