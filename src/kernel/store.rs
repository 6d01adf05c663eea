//! The boundary between PKCS#11 logic and the kernel.
//!
//! Token, session and object logic (`module.rs`) speaks only to [`KeyStore`].
//! [`KernelStore`] is the real thing; the unit tests use an in-memory store so
//! the logic is tested fast, while the kernel implementation is tested in the
//! lab against real kernels. The `mock` cargo feature (never on in a normal
//! build) exposes that store so the fuzzer (`fuzz/`) can drive the C ABI over it.

use super::keyctl::{self, Errno, PkeyQuery, Serial};
use crate::hash::Hash;
use std::sync::Arc;

/// The store `C_Initialize` builds the module over: the kernel, unless a
/// harness built with the `mock` feature installed another with
/// [`super::mock::install_factory`].
pub fn default_store() -> Arc<dyn KeyStore> {
    #[cfg(any(test, feature = "mock"))]
    if let Some(factory) = super::mock::FACTORY.get() {
        return factory();
    }
    Arc::new(KernelStore)
}

/// Which keyring a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// The caller's session keyring (`@s`): lives as long as the login session.
    Session,
    /// The caller's user keyring (`@u`): lives while the user has processes.
    User,
    /// The user's persistent keyring: survives logouts until its expiry timer.
    Persistent,
    /// The calling process's keyring: dies with the process, even on SIGKILL.
    Process,
    /// A keyring named in the configuration.
    Named(String),
}

/// `KEYCTL_DESCRIBE`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDesc {
    pub key_type: String,
    pub uid: u32,
    pub gid: u32,
    pub perm: u32,
    /// The description, with any bytes that are not UTF-8 written `\xNN`:
    /// a key whose creator chose such a description is still listed.
    pub description: String,
}

impl KeyDesc {
    /// `type;uid;gid;perm;description`. The kernel prints uid and gid signed
    /// (`%d`): an unmapped id reads -1.
    pub fn parse(raw: &[u8]) -> Option<KeyDesc> {
        let mut it = raw.splitn(5, |b| *b == b';');
        let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
        let id = |b: &[u8]| -> Option<u32> {
            Some(std::str::from_utf8(b).ok()?.parse::<i64>().ok()? as u32)
        };
        Some(KeyDesc {
            key_type: text(it.next()?)?,
            uid: id(it.next()?)?,
            gid: id(it.next()?)?,
            perm: u32::from_str_radix(std::str::from_utf8(it.next()?).ok()?, 16).ok()?,
            description: escape_invalid_utf8(it.next()?),
        })
    }
}

/// Valid UTF-8 as it is, every other byte as `\xNN`.
pub fn escape_invalid_utf8(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        s.push_str(chunk.valid());
        for x in chunk.invalid() {
            s.push_str(&format!("\\x{x:02x}"));
        }
    }
    s
}

/// What the module needs from wherever keys live.
pub trait KeyStore: Send + Sync {
    /// The keyring behind a token, if it exists now.
    fn resolve(&self, kind: &TokenKind) -> Result<Serial, Errno>;
    /// Serials linked directly in a keyring.
    fn links(&self, keyring: Serial) -> Result<Vec<Serial>, Errno>;
    /// How many links `keyring` holds, without reading them.
    fn link_count(&self, keyring: Serial) -> Result<usize, Errno>;
    fn describe(&self, key: Serial) -> Result<KeyDesc, Errno>;
    /// PKCS#1 capabilities and sizes of an asymmetric key.
    fn query(&self, key: Serial) -> Result<PkeyQuery, Errno>;
    /// PKCS#1 v1.5 signature: with `hash`, `input` is that hash's digest; without,
    /// `input` is padded as it is. `out` is exactly the signature size.
    fn sign(
        &self,
        key: Serial,
        hash: Option<Hash>,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Errno>;
    /// The public raw operation x^e mod n; `input` and `out` are key-sized.
    fn public_raw(&self, key: Serial, input: &[u8], out: &mut [u8]) -> Result<usize, Errno>;
    /// The raw private operation x^d mod n (x < n); `input` and `out` are
    /// key-sized. PSS, raw RSA and decryption are built on it.
    fn private_raw(&self, key: Serial, input: &[u8], out: &mut [u8]) -> Result<usize, Errno>;
    /// Adds a key (`asymmetric` from PKCS#8 DER, or `user` metadata) to a
    /// keyring; a `user` key of the same description is updated in place.
    fn add(
        &self,
        keyring: Serial,
        key_type: &str,
        description: &str,
        payload: &[u8],
    ) -> Result<Serial, Errno>;
    /// The payload of a `user` key.
    fn read(&self, key: Serial) -> Result<Vec<u8>, Errno>;
    fn unlink(&self, keyring: Serial, key: Serial) -> Result<(), Errno>;
    /// A key of this type and description linked in `keyring` (or in a
    /// keyring linked in it), found by the kernel.
    fn search(&self, keyring: Serial, key_type: &str, description: &str) -> Result<Serial, Errno>;
    /// Whether the kernel makes persistent keyrings (on demand, per user).
    fn has_persistent_keyrings(&self) -> bool;
    /// A new, empty keyring linked into `parent`.
    fn new_keyring(&self, parent: Serial, description: &str) -> Result<Serial, Errno>;
    /// Links `key` into `keyring` (`KEYCTL_LINK`), displacing a key of the
    /// same type and description linked there, in one step.
    fn link_key(&self, keyring: Serial, key: Serial) -> Result<(), Errno>;
    /// Unlinks everything from a keyring.
    fn clear(&self, keyring: Serial) -> Result<(), Errno>;
}

/// The Linux kernel key retention service.
#[derive(Debug, Default)]
pub struct KernelStore;

impl KeyStore for KernelStore {
    fn resolve(&self, kind: &TokenKind) -> Result<Serial, Errno> {
        match kind {
            // Without a session keyring the kernel answers with the user-session
            // keyring, which is where such a process's `@s` keys actually go.
            TokenKind::Session => keyctl::keyring_id(keyctl::KEY_SPEC_SESSION_KEYRING, false),
            TokenKind::User => keyctl::keyring_id(keyctl::KEY_SPEC_USER_KEYRING, true),
            // The kernel links the persistent keyring into a keyring of ours to
            // make it possessed. The process keyring dies with this process, so
            // we leave nothing behind in the user's session.
            TokenKind::Persistent => keyctl::persistent_keyring(keyctl::KEY_SPEC_PROCESS_KEYRING),
            TokenKind::Process => keyctl::keyring_id(keyctl::KEY_SPEC_PROCESS_KEYRING, true),
            TokenKind::Named(name) => {
                keyctl::search(keyctl::KEY_SPEC_SESSION_KEYRING, "keyring", name)
                    .or_else(|_| keyctl::search(keyctl::KEY_SPEC_USER_KEYRING, "keyring", name))
            }
        }
    }

    fn links(&self, keyring: Serial) -> Result<Vec<Serial>, Errno> {
        keyctl::keyring_links(keyring)
    }

    fn link_count(&self, keyring: Serial) -> Result<usize, Errno> {
        keyctl::keyring_link_count(keyring)
    }

    fn describe(&self, key: Serial) -> Result<KeyDesc, Errno> {
        let raw = keyctl::describe(key)?;
        KeyDesc::parse(&raw).ok_or(Errno(libc::EBADMSG))
    }

    fn query(&self, key: Serial) -> Result<PkeyQuery, Errno> {
        keyctl::pkey_query(key, "enc=pkcs1")
    }

    fn sign(
        &self,
        key: Serial,
        hash: Option<Hash>,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Errno> {
        match hash {
            Some(h) => {
                // The kernel does not check the digest length; a wrong one would
                // produce a valid-looking signature over garbage.
                if input.len() != h.digest_len() {
                    return Err(Errno(libc::EINVAL));
                }
                keyctl::pkey_sign(
                    key,
                    &format!("enc=pkcs1 hash={}", h.kernel_name()),
                    input,
                    out,
                )
            }
            None => keyctl::pkey_sign(key, "enc=pkcs1", input, out),
        }
    }

    fn public_raw(&self, key: Serial, input: &[u8], out: &mut [u8]) -> Result<usize, Errno> {
        keyctl::pkey_encrypt(key, "enc=raw", input, out)
    }

    fn private_raw(&self, key: Serial, input: &[u8], out: &mut [u8]) -> Result<usize, Errno> {
        keyctl::pkey_decrypt(key, "enc=raw", input, out)
    }

    fn add(
        &self,
        keyring: Serial,
        key_type: &str,
        description: &str,
        payload: &[u8],
    ) -> Result<Serial, Errno> {
        keyctl::add_key(key_type, description, payload, keyring)
    }

    fn read(&self, key: Serial) -> Result<Vec<u8>, Errno> {
        keyctl::read(key)
    }

    fn unlink(&self, keyring: Serial, key: Serial) -> Result<(), Errno> {
        keyctl::unlink(key, keyring)
    }

    fn search(&self, keyring: Serial, key_type: &str, description: &str) -> Result<Serial, Errno> {
        keyctl::search(keyring, key_type, description)
    }

    fn has_persistent_keyrings(&self) -> bool {
        // The sysctl exists where CONFIG_PERSISTENT_KEYRINGS does.
        std::path::Path::new("/proc/sys/kernel/keys/persistent_keyring_expiry").exists()
    }

    fn new_keyring(&self, parent: Serial, description: &str) -> Result<Serial, Errno> {
        keyctl::add_key("keyring", description, &[], parent)
    }

    fn link_key(&self, keyring: Serial, key: Serial) -> Result<(), Errno> {
        keyctl::link(key, keyring)
    }

    fn clear(&self, keyring: Serial) -> Result<(), Errno> {
        keyctl::clear(keyring)
    }
}
