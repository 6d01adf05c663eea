//! An in-memory key store with real RSA keys (RustCrypto `rsa`), for unit
//! tests of the PKCS#11 logic and for the fuzzer. It mimics the kernel's
//! errors.

use super::keyctl::{self, Errno, PkeyQuery, Serial};
use super::store::{KeyDesc, KeyStore, TokenKind};
use crate::hash::Hash;
use crate::sync::Mutex;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, Pkcs1v15Sign, RsaPrivateKey};
use std::collections::HashMap;
#[cfg(any(test, feature = "mock"))]
use std::sync::Arc;

#[cfg(any(test, feature = "mock"))]
pub(crate) static FACTORY: std::sync::OnceLock<fn() -> Arc<dyn KeyStore>> =
    std::sync::OnceLock::new();

/// Makes every later `C_Initialize` build its module over the store that
/// `factory` returns. Only the first installation counts: the C ABI has one
/// global module, so a process has one kind of store. Also in the unit tests,
/// whose C ABI tests (`ffi/abi_tests.rs`) run over the in-memory store.
#[cfg(any(test, feature = "mock"))]
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
    /// Calls of `describe` and `public_raw` so far: what a search cost.
    pub describes: Mutex<usize>,
    pub publics: Mutex<usize>,
    /// Reads of a keyring's links (not of its size).
    pub link_reads: Mutex<usize>,
    /// Calls of `query` (`KEYCTL_PKEY_QUERY`).
    pub queries: Mutex<usize>,
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

    /// As the kernel's `KEYCTL_SEARCH`: the keyring's own links first, then
    /// the keyrings linked in it, to the kernel's depth of 6. A matching key
    /// that is gone (revoked, expired) is skipped, and its error is the
    /// answer if no live one matches.
    fn search_below(
        &self,
        keyring: Serial,
        key_type: &str,
        description: &str,
        depth: usize,
    ) -> Result<Serial, Errno> {
        let links = self.ring_links(keyring)?;
        let mut gone = None;
        {
            let keys = self.keys.lock();
            for &s in &links {
                if let Some(k) = keys.get(&s) {
                    if k.desc.key_type == key_type && k.desc.description == description {
                        match k.gone {
                            None => return Ok(s),
                            Some(e) => gone = gone.or(Some(e)),
                        }
                    }
                }
            }
        }
        if depth < 6 {
            let nested: Vec<Serial> = {
                let rings = self.keyrings.lock();
                links
                    .iter()
                    .copied()
                    .filter(|s| rings.values().any(|r| r.0 == *s))
                    .collect()
            };
            for r in nested {
                match self.search_below(r, key_type, description, depth + 1) {
                    Ok(s) => return Ok(s),
                    Err(Errno(e)) if e != libc::ENOKEY => gone = gone.or(Some(e)),
                    Err(_) => {}
                }
            }
        }
        Err(Errno(gone.unwrap_or(libc::ENOKEY)))
    }

    fn ring_links(&self, keyring: Serial) -> Result<Vec<Serial>, Errno> {
        self.keyrings
            .lock()
            .values()
            .find(|r| r.0 == keyring)
            .map(|r| r.1.clone())
            .ok_or(Errno(libc::ENOKEY))
    }

    /// Removes a key from every keyring; the key itself stays alive, as a
    /// kernel key does until the garbage collector runs.
    pub fn unlink(&self, key: Serial) {
        for r in self.keyrings.lock().values_mut() {
            r.1.retain(|k| *k != key);
        }
    }

    /// The serial of a token's keyring.
    pub fn ring_serial(&self, kind: &TokenKind) -> Serial {
        self.keyrings.lock()[&ring_name(kind)].0
    }

    /// Removes a key (or keyring) from one keyring only.
    pub fn unlink_from(&self, kind: &TokenKind, key: Serial) {
        if let Some(r) = self.keyrings.lock().get_mut(&ring_name(kind)) {
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
                    && k.desc.description.starts_with(crate::records::META_PREFIX)
            })
            .map(|k| (k.desc.description.clone(), k.payload.clone()))
            .collect();
        v.sort();
        v
    }

    /// Destroys a keyring (its keys stay alive if linked elsewhere).
    pub fn remove_keyring(&self, kind: &TokenKind) {
        self.keyrings.lock().remove(&ring_name(kind));
    }

    /// Links an existing key into another keyring too.
    pub fn link(&self, kind: &TokenKind, key: Serial) {
        self.keyrings
            .lock()
            .get_mut(&ring_name(kind))
            .expect("keyring")
            .1
            .push(key);
    }

    /// Makes another user the owner of a key (as if that user had added it).
    pub fn set_owner(&self, key: Serial, uid: u32) {
        self.keys.lock().get_mut(&key).expect("key").desc.uid = uid;
    }

    /// The serials linked in every keyring, for "nothing was left behind".
    pub fn all_links(&self) -> Vec<Serial> {
        let mut v: Vec<Serial> = self
            .keyrings
            .lock()
            .values()
            .flat_map(|r| r.1.iter().copied())
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
        *self.link_reads.lock() += 1;
        self.ring_links(keyring)
    }

    fn link_count(&self, keyring: Serial) -> Result<usize, Errno> {
        self.ring_links(keyring).map(|l| l.len())
    }

    fn describe(&self, key: Serial) -> Result<KeyDesc, Errno> {
        *self.describes.lock() += 1;
        let keys = self.keys.lock();
        let k = keys.get(&key).ok_or(Errno(libc::ENOKEY))?;
        match k.gone {
            Some(e) => Err(Errno(e)),
            None => Ok(k.desc.clone()),
        }
    }

    fn query(&self, key: Serial) -> Result<PkeyQuery, Errno> {
        *self.queries.lock() += 1;
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
        *self.publics.lock() += 1;
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

    fn search(&self, keyring: Serial, key_type: &str, description: &str) -> Result<Serial, Errno> {
        self.search_below(keyring, key_type, description, 0)
    }

    fn has_persistent_keyrings(&self) -> bool {
        self.keyrings
            .lock()
            .contains_key(&ring_name(&TokenKind::Persistent))
    }

    fn new_keyring(&self, _parent: Serial, description: &str) -> Result<Serial, Errno> {
        let s = self.serial();
        self.keyrings
            .lock()
            .insert(format!("new:{description}:{s}"), (s, Vec::new()));
        Ok(s)
    }

    fn link_key(&self, keyring: Serial, key: Serial) -> Result<(), Errno> {
        let keys = self.keys.lock();
        let desc = |s: &Serial| {
            keys.get(s)
                .map(|k| (k.desc.key_type.clone(), k.desc.description.clone()))
        };
        let linked = desc(&key).ok_or(Errno(libc::ENOKEY))?;
        let mut rings = self.keyrings.lock();
        let ring = rings
            .values_mut()
            .find(|r| r.0 == keyring)
            .ok_or(Errno(libc::ENOKEY))?;
        // As the kernel does: a key of the same type and description goes.
        ring.1
            .retain(|s| *s == key || desc(s).as_ref() != Some(&linked));
        if !ring.1.contains(&key) {
            ring.1.push(key);
        }
        Ok(())
    }

    fn clear(&self, keyring: Serial) -> Result<(), Errno> {
        let mut rings = self.keyrings.lock();
        let ring = rings
            .values_mut()
            .find(|r| r.0 == keyring)
            .ok_or(Errno(libc::ENOKEY))?;
        ring.1.clear();
        Ok(())
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
