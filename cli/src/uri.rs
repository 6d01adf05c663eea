//! PKCS#11 URIs (RFC 7512) as p11tool prints them, and the ways a user names
//! a key: its label, `id:HEX`, or a URI.

use crate::app::{Key, TOKEN_MANUFACTURER};
use crate::args::parse_hex;
use crate::fail::{Fail, Res};
use keyring_pkcs11::hex;
use keyring_pkcs11::module::Token;

/// RFC 7512 percent-encoding as p11tool prints it: letters, digits and
/// `-_.` as they are, every other byte `%XX`; `force` encodes all bytes.
pub fn pct(b: &[u8], force: bool) -> String {
    b.iter()
        .map(|&c| {
            if !force && (c.is_ascii_alphanumeric() || b"-_.".contains(&c)) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

pub fn unpct(s: &str) -> Res<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Fail::input(format!("bad percent-encoding in URI: {s}")))?;
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// A PKCS#11 URI's path attributes (RFC 7512).
#[derive(Default)]
pub struct Uri {
    pub token: Option<String>,
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub kind: Option<String>,
}

impl Uri {
    pub fn parse(s: &str) -> Res<Uri> {
        let body = s
            .strip_prefix("pkcs11:")
            .ok_or_else(|| Fail::input("a PKCS#11 URI starts with pkcs11:"))?;
        let path = body.split_once('?').map_or(body, |(p, _)| p);
        let mut u = Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| Fail::input(format!("bad URI attribute \"{attr}\"")))?;
            let v = unpct(v)?;
            let text = || {
                String::from_utf8(v.clone())
                    .map_err(|_| Fail::input(format!("URI attribute {k} is not UTF-8")))
            };
            match k {
                "token" => u.token = Some(text()?),
                "manufacturer" => u.manufacturer = Some(text()?),
                "serial" => u.serial = Some(text()?),
                "model" => u.model = Some(text()?),
                "object" => u.object = Some(text()?),
                "id" => u.id = Some(v),
                "type" => u.kind = Some(text()?),
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer"
                | "slot-id" => {}
                other => {
                    return Err(Fail::input(format!(
                        "unsupported URI attribute \"{other}\""
                    )));
                }
            }
        }
        if let Some(t) = &u.kind {
            if t != "private" && t != "public" {
                return Err(Fail::input(format!(
                    "type={t}: this tool handles keys (type=private or type=public)"
                )));
            }
        }
        Ok(u)
    }

    pub fn names_token(&self) -> bool {
        self.token.is_some() || self.serial.is_some() || self.model.is_some()
    }

    pub fn token_matches(&self, t: &Token) -> bool {
        self.token.as_ref().is_none_or(|x| *x == t.label)
            && self.serial.as_ref().is_none_or(|x| *x == t.serial)
            && self.model.as_ref().is_none_or(|x| x == t.model)
            && self
                .manufacturer
                .as_ref()
                .is_none_or(|x| x == TOKEN_MANUFACTURER)
    }
}

pub enum Selector {
    Label(String),
    Id(Vec<u8>),
    Uri(Uri),
}

impl Selector {
    pub fn parse(s: &str) -> Res<Selector> {
        if s.starts_with("pkcs11:") {
            return Uri::parse(s).map(Selector::Uri);
        }
        if let Some(hex) = s.strip_prefix("id:") {
            return parse_hex(hex)
                .map(Selector::Id)
                .map_err(|e| Fail::input(format!("id:{hex}: {e}")));
        }
        if s.is_empty() {
            return Err(Fail::input("give a key's label, id:HEX or pkcs11: URI"));
        }
        Ok(Selector::Label(s.to_string()))
    }

    pub fn matches(&self, k: &Key) -> bool {
        match self {
            Selector::Label(l) => k.label == *l,
            Selector::Id(id) => k.id == *id,
            Selector::Uri(u) => {
                u.object.as_ref().is_none_or(|o| *o == k.label)
                    && u.id.as_ref().is_none_or(|i| *i == k.id)
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Selector::Label(l) => format!("labelled \"{l}\""),
            Selector::Id(id) => format!("with id {}", hex(id)),
            Selector::Uri(_) => "matching the URI".into(),
        }
    }

    /// The token a URI names by label, so that an unconfigured named
    /// keyring still gets a token.
    pub fn token_label(&self) -> Option<&str> {
        match self {
            Selector::Uri(u) => u.token.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_encode_like_p11tool_and_parse_back() {
        assert_eq!(pct(b"user keyring", false), "user%20keyring");
        assert_eq!(pct(b"a-b_c.d/e", false), "a-b_c.d%2Fe");
        assert_eq!(pct(&[0xab, 0x01], true), "%AB%01");
        let u = Uri::parse("pkcs11:model=user%20keyring;token=user;id=%ab%01;object=my%20key;type=private?pin-value=x").unwrap();
        assert_eq!(u.token.as_deref(), Some("user"));
        assert_eq!(u.model.as_deref(), Some("user keyring"));
        assert_eq!(u.object.as_deref(), Some("my key"));
        assert_eq!(u.id, Some(vec![0xab, 0x01]));
        assert!(Uri::parse("pkcs11:type=cert").is_err());
        assert!(Uri::parse("pkcs11:object=%zz").is_err());
        assert!(Uri::parse("pkcs11:bogus=1").is_err());
    }
}
