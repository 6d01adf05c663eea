//! The boundary between PKCS#11 logic and the kernel.
//!
//! Token, session and object logic (`module.rs`) speaks only to [`KeyStore`].
//! [`KernelStore`] is the real thing; the unit tests use an in-memory store so
//! the logic is tested fast, while the kernel implementation is tested in the
//! lab against real kernels. The `mock` cargo feature (never on in a normal
//! build) exposes that store so the fuzzer (`fuzz/`) can drive the C ABI over it.

use crate::keyctl::{self, Errno, PkeyQuery, Serial};
use crate::mechanism::Hash;
use std::sync::Arc;

/// The store `C_Initialize` builds the module over: the kernel, unless a
/// harness built with the `mock` feature installed another with
/// [`mock::install_factory`].
pub fn default_store() -> Arc<dyn KeyStore> {
    #[cfg(feature = "mock")]
    if let Some(factory) = mock::FACTORY.get() {
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
    pub description: String,
}

impl KeyDesc {
    pub fn parse(s: &str) -> Option<KeyDesc> {
        let mut it = s.splitn(5, ';');
        Some(KeyDesc {
            key_type: it.next()?.to_string(),
            uid: it.next()?.parse().ok()?,
            gid: it.next()?.parse().ok()?,
            perm: u32::from_str_radix(it.next()?, 16).ok()?,
            description: it.next()?.to_string(),
        })
    }
}

/// What the module needs from wherever keys live.
pub trait KeyStore: Send + Sync {
    /// The keyring behind a token, if it exists now.
    fn resolve(&self, kind: &TokenKind) -> Result<Serial, Errno>;
    /// Serials linked directly in a keyring.
    fn links(&self, keyring: Serial) -> Result<Vec<Serial>, Errno>;
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
}

#[cfg(any(test, feature = "mock"))]
pub mod mock {
    //! An in-memory key store with real RSA keys (RustCrypto `rsa`), for unit
    //! tests of the PKCS#11 logic and for the fuzzer. It mimics the kernel's
    //! errors.

    use super::*;
    use crate::sync::Mutex;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    use rsa::{BigUint, Pkcs1v15Sign, RsaPrivateKey};
    use std::collections::HashMap;

    #[cfg(feature = "mock")]
    pub(super) static FACTORY: std::sync::OnceLock<fn() -> Arc<dyn KeyStore>> =
        std::sync::OnceLock::new();

    /// Makes every later `C_Initialize` build its module over the store that
    /// `factory` returns. Only the first installation counts: the C ABI has one
    /// global module, so a process has one kind of store.
    #[cfg(feature = "mock")]
    pub fn install_factory(factory: fn() -> Arc<dyn KeyStore>) {
        let _ = FACTORY.set(factory);
    }

    #[cfg(feature = "mock")]
    pub(crate) static GENERATOR: std::sync::OnceLock<fn(u32, u64) -> Option<RsaPrivateKey>> =
        std::sync::OnceLock::new();

    /// Makes `C_GenerateKeyPair` take its keys from `generator` (given the
    /// size and public exponent, after the module's own checks of both)
    /// instead of generating them: a fuzzer cannot wait seconds per key, and
    /// its inputs must replay. `None` fails the generation.
    #[cfg(feature = "mock")]
    pub fn install_generator(generator: fn(u32, u64) -> Option<RsaPrivateKey>) {
        let _ = GENERATOR.set(generator);
    }

    pub struct MockKey {
        pub desc: KeyDesc,
        pub key: Option<RsaPrivateKey>,
        pub payload: Vec<u8>,
        pub gone: Option<i32>,
    }

    #[derive(Default)]
    pub struct MockStore {
        pub keyrings: Mutex<HashMap<String, (Serial, Vec<Serial>)>>,
        pub keys: Mutex<HashMap<Serial, MockKey>>,
        next: Mutex<Serial>,
        pub signs: Mutex<usize>,
        /// How many more `add`s the kernel would accept before EDQUOT
        /// (`None`: no quota).
        pub add_quota: Mutex<Option<usize>>,
    }

    fn ring_name(kind: &TokenKind) -> String {
        match kind {
            TokenKind::Session => "@s".into(),
            TokenKind::User => "@u".into(),
            TokenKind::Persistent => "@persistent".into(),
            TokenKind::Process => "@p".into(),
            TokenKind::Named(n) => n.clone(),
        }
    }

    impl MockStore {
        fn serial(&self) -> Serial {
            let mut n = self.next.lock();
            *n += 1;
            1000 + *n
        }

        pub fn add_keyring(&self, kind: &TokenKind) -> Serial {
            let s = self.serial();
            self.keyrings
                .lock()
                .insert(ring_name(kind), (s, Vec::new()));
            s
        }

        pub fn add_key(
            &self,
            kind: &TokenKind,
            key_type: &str,
            desc: &str,
            key: Option<RsaPrivateKey>,
        ) -> Serial {
            let s = self.serial();
            let d = KeyDesc {
                key_type: key_type.into(),
                uid: 0,
                gid: 0,
                perm: 0x3f010000,
                description: desc.into(),
            };
            self.keys.lock().insert(
                s,
                MockKey {
                    desc: d,
                    key,
                    payload: Vec::new(),
                    gone: None,
                },
            );
            self.keyrings
                .lock()
                .get_mut(&ring_name(kind))
                .expect("keyring")
                .1
                .push(s);
            s
        }

        /// Removes a key from every keyring; the key itself stays alive, as a
        /// kernel key does until the garbage collector runs.
        pub fn unlink(&self, key: Serial) {
            for r in self.keyrings.lock().values_mut() {
                r.1.retain(|k| *k != key);
            }
        }

        /// Our metadata records still linked in some keyring.
        pub fn user_payloads(&self) -> Vec<(String, Vec<u8>)> {
            let keys = self.keys.lock();
            let rings = self.keyrings.lock();
            let mut v: Vec<_> = rings
                .values()
                .flat_map(|r| r.1.iter())
                .filter_map(|s| keys.get(s))
                .filter(|k| {
                    k.desc.key_type == "user"
                        && k.desc
                            .description
                            .starts_with(crate::lifecycle::META_PREFIX)
                })
                .map(|k| (k.desc.description.clone(), k.payload.clone()))
                .collect();
            v.sort();
            v
        }

        pub fn set_gone(&self, key: Serial, errno: i32) {
            self.keys.lock().get_mut(&key).expect("key").gone = Some(errno);
        }

        fn with_key<T>(
            &self,
            key: Serial,
            f: impl FnOnce(&RsaPrivateKey) -> Result<T, Errno>,
        ) -> Result<T, Errno> {
            let keys = self.keys.lock();
            let k = keys.get(&key).ok_or(Errno(libc::ENOKEY))?;
            if let Some(e) = k.gone {
                return Err(Errno(e));
            }
            f(k.key.as_ref().ok_or(Errno(libc::EOPNOTSUPP))?)
        }
    }

    /// x^d mod n by the CRT, as the kernel computes it: a third of the work
    /// of one exponentiation by d, which made key creation (checked by a
    /// private operation) the fuzzer's slowest call.
    fn crt(k: &RsaPrivateKey, x: &BigUint) -> BigUint {
        // qinv as precomputed: crt_coefficient() computes it anew.
        let qinv = k.qinv().and_then(|i| i.to_biguint());
        match (k.primes(), k.dp(), k.dq(), qinv) {
            ([p, q], Some(dp), Some(dq), Some(qinv)) => {
                let m1 = x.modpow(dp, p);
                let m2 = x.modpow(dq, q);
                let h = (qinv * (m1 + p - &m2 % p)) % p;
                m2 + h * q
            }
            _ => x.modpow(k.d(), k.n()),
        }
    }

    impl KeyStore for MockStore {
        fn resolve(&self, kind: &TokenKind) -> Result<Serial, Errno> {
            self.keyrings
                .lock()
                .get(&ring_name(kind))
                .map(|r| r.0)
                .ok_or(Errno(libc::ENOKEY))
        }

        fn links(&self, keyring: Serial) -> Result<Vec<Serial>, Errno> {
            self.keyrings
                .lock()
                .values()
                .find(|r| r.0 == keyring)
                .map(|r| r.1.clone())
                .ok_or(Errno(libc::ENOKEY))
        }

        fn describe(&self, key: Serial) -> Result<KeyDesc, Errno> {
            let keys = self.keys.lock();
            let k = keys.get(&key).ok_or(Errno(libc::ENOKEY))?;
            match k.gone {
                Some(e) => Err(Errno(e)),
                None => Ok(k.desc.clone()),
            }
        }

        fn query(&self, key: Serial) -> Result<PkeyQuery, Errno> {
            self.with_key(key, |k| {
                let size = k.size();
                Ok(PkeyQuery {
                    supported_ops: keyctl::KEYCTL_SUPPORTS_SIGN
                        | keyctl::KEYCTL_SUPPORTS_DECRYPT
                        | keyctl::KEYCTL_SUPPORTS_ENCRYPT
                        | keyctl::KEYCTL_SUPPORTS_VERIFY,
                    key_size: (size * 8) as u32,
                    max_data_size: size as u16,
                    max_sig_size: size as u16,
                    max_enc_size: size as u16,
                    max_dec_size: size as u16,
                })
            })
        }

        fn sign(
            &self,
            key: Serial,
            hash: Option<Hash>,
            input: &[u8],
            out: &mut [u8],
        ) -> Result<usize, Errno> {
            *self.signs.lock() += 1;
            self.with_key(key, |k| {
                if out.len() != k.size() {
                    return Err(Errno(libc::EINVAL));
                }
                let scheme = match hash {
                    None => Pkcs1v15Sign::new_unprefixed(),
                    Some(Hash::Sha1) => Pkcs1v15Sign::new::<sha1::Sha1>(),
                    Some(Hash::Sha224) => Pkcs1v15Sign::new::<sha2::Sha224>(),
                    Some(Hash::Sha256) => Pkcs1v15Sign::new::<sha2::Sha256>(),
                    Some(Hash::Sha384) => Pkcs1v15Sign::new::<sha2::Sha384>(),
                    Some(Hash::Sha512) => Pkcs1v15Sign::new::<sha2::Sha512>(),
                };
                let sig = k.sign(scheme, input).map_err(|_| Errno(libc::EOVERFLOW))?;
                out[..sig.len()].copy_from_slice(&sig);
                Ok(sig.len())
            })
        }

        fn public_raw(&self, key: Serial, input: &[u8], out: &mut [u8]) -> Result<usize, Errno> {
            self.with_key(key, |k| {
                let v = BigUint::from_bytes_be(input)
                    .modpow(k.e(), k.n())
                    .to_bytes_be();
                let size = k.size();
                out[..size].fill(0);
                out[size - v.len()..size].copy_from_slice(&v);
                Ok(size)
            })
        }

        fn add(
            &self,
            keyring: Serial,
            key_type: &str,
            description: &str,
            payload: &[u8],
        ) -> Result<Serial, Errno> {
            use rsa::pkcs8::DecodePrivateKey;
            if let Some(left) = self.add_quota.lock().as_mut() {
                if *left == 0 {
                    return Err(Errno(libc::EDQUOT));
                }
                *left -= 1;
            }
            let key = match key_type {
                "asymmetric" => {
                    Some(RsaPrivateKey::from_pkcs8_der(payload).map_err(|_| Errno(libc::EBADMSG))?)
                }
                _ => None,
            };
            if key_type == "user" {
                // Update in place, as the kernel does for user keys.
                let mut keys = self.keys.lock();
                let rings = self.keyrings.lock();
                let ring = rings
                    .values()
                    .find(|r| r.0 == keyring)
                    .ok_or(Errno(libc::ENOKEY))?;
                if let Some(&s) = ring.1.iter().find(|s| {
                    keys.get(s)
                        .is_some_and(|k| k.desc.description == description)
                }) {
                    keys.get_mut(&s).expect("listed").payload = payload.to_vec();
                    return Ok(s);
                }
            }
            let s = self.serial();
            let d = KeyDesc {
                key_type: key_type.into(),
                uid: 0,
                gid: 0,
                perm: 0x3f010000,
                description: description.into(),
            };
            self.keys.lock().insert(
                s,
                MockKey {
                    desc: d,
                    key,
                    payload: payload.to_vec(),
                    gone: None,
                },
            );
            let mut rings = self.keyrings.lock();
            let ring = rings
                .values_mut()
                .find(|r| r.0 == keyring)
                .ok_or(Errno(libc::ENOKEY))?;
            ring.1.push(s);
            Ok(s)
        }

        fn read(&self, key: Serial) -> Result<Vec<u8>, Errno> {
            self.keys
                .lock()
                .get(&key)
                .map(|k| k.payload.clone())
                .ok_or(Errno(libc::ENOKEY))
        }

        fn unlink(&self, keyring: Serial, key: Serial) -> Result<(), Errno> {
            let mut rings = self.keyrings.lock();
            let ring = rings
                .values_mut()
                .find(|r| r.0 == keyring)
                .ok_or(Errno(libc::ENOKEY))?;
            let before = ring.1.len();
            ring.1.retain(|k| *k != key);
            if ring.1.len() == before {
                Err(Errno(libc::ENOENT))
            } else {
                Ok(())
            }
        }

        fn private_raw(&self, key: Serial, input: &[u8], out: &mut [u8]) -> Result<usize, Errno> {
            *self.signs.lock() += 1;
            self.with_key(key, |k| {
                let x = BigUint::from_bytes_be(input);
                if &x >= k.n() {
                    return Err(Errno(libc::EINVAL));
                }
                let v = crt(k, &x).to_bytes_be();
                let size = k.size();
                out[..size].fill(0);
                out[size - v.len()..size].copy_from_slice(&v);
                Ok(size)
            })
        }
    }
}
