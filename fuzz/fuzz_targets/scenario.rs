//! Coherent call sequences over keys the harness knows are valid: sign then
//! verify, encrypt then decrypt. Made of single random calls, such sequences
//! are too rare to reach the padding code; here the fuzzer chooses only the
//! mechanism, parameters, data, buffer lengths and corruption, and the
//! results are checked against the spec and against the `rsa` crate.

use super::*;
use rsa::pkcs1v15::{Pkcs1v15Encrypt, Pkcs1v15Sign};
use rsa::{Oaep, Pss, RsaPublicKey};
use sha1::Sha1;
use sha2::digest::DynDigest;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// A private key and its public key, both found in the token of `session`.
#[derive(Clone)]
pub struct KeyPair {
    session: CK_SESSION_HANDLE,
    private: CK_OBJECT_HANDLE,
    public: CK_OBJECT_HANDLE,
    modulus: Vec<u8>,
}

/// (digest mechanism, MGF1 generator, digest length)
const HASH_ALGS: [(CK_MECHANISM_TYPE, CK_RSA_PKCS_MGF_TYPE, usize); 5] = [
    (CKM_SHA_1, CKG_MGF1_SHA1, 20),
    (CKM_SHA224, CKG_MGF1_SHA224, 28),
    (CKM_SHA256, CKG_MGF1_SHA256, 32),
    (CKM_SHA384, CKG_MGF1_SHA384, 48),
    (CKM_SHA512, CKG_MGF1_SHA512, 64),
];

/// Signature mechanisms and the index of their hash in HASH_ALGS.
const SIGN_MECHS: &[(CK_MECHANISM_TYPE, Option<usize>)] = &[
    (CKM_RSA_PKCS, None),
    (CKM_RSA_X_509, None),
    (CKM_RSA_PKCS_PSS, None),
    (CKM_SHA1_RSA_PKCS, Some(0)),
    (CKM_SHA224_RSA_PKCS, Some(1)),
    (CKM_SHA256_RSA_PKCS, Some(2)),
    (CKM_SHA384_RSA_PKCS, Some(3)),
    (CKM_SHA512_RSA_PKCS, Some(4)),
    (CKM_SHA1_RSA_PKCS_PSS, Some(0)),
    (CKM_SHA224_RSA_PKCS_PSS, Some(1)),
    (CKM_SHA256_RSA_PKCS_PSS, Some(2)),
    (CKM_SHA384_RSA_PKCS_PSS, Some(3)),
    (CKM_SHA512_RSA_PKCS_PSS, Some(4)),
];

fn is_pss(m: CK_MECHANISM_TYPE) -> bool {
    matches!(
        m,
        CKM_RSA_PKCS_PSS
            | CKM_SHA1_RSA_PKCS_PSS
            | CKM_SHA224_RSA_PKCS_PSS
            | CKM_SHA256_RSA_PKCS_PSS
            | CKM_SHA384_RSA_PKCS_PSS
            | CKM_SHA512_RSA_PKCS_PSS
    )
}

fn dyn_digest(i: usize) -> Box<dyn DynDigest + Send + Sync> {
    match i {
        0 => Box::new(Sha1::new()),
        1 => Box::new(Sha224::new()),
        2 => Box::new(Sha256::new()),
        3 => Box::new(Sha384::new()),
        _ => Box::new(Sha512::new()),
    }
}

fn digest(i: usize, data: &[u8]) -> Vec<u8> {
    let mut d = dyn_digest(i);
    d.update(data);
    d.finalize().to_vec()
}

fn pkcs1_scheme(i: usize) -> Pkcs1v15Sign {
    match i {
        0 => Pkcs1v15Sign::new::<Sha1>(),
        1 => Pkcs1v15Sign::new::<Sha224>(),
        2 => Pkcs1v15Sign::new::<Sha256>(),
        3 => Pkcs1v15Sign::new::<Sha384>(),
        _ => Pkcs1v15Sign::new::<Sha512>(),
    }
}

/// `n` bytes from the fuzzer, zeros once it runs dry: the lengths are what
/// the scenario chose, whatever is left of the input.
fn take(u: &mut Unstructured, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    let _ = u.fill_buffer(&mut v);
    v
}

/// What earlier steps may have done to the session or key: closed,
/// finalised, destroyed, or left an operation of the same kind active.
fn disturbed(rv: CK_RV) -> bool {
    matches!(
        rv,
        CKR_SESSION_HANDLE_INVALID
            | CKR_SESSION_CLOSED
            | CKR_OPERATION_ACTIVE
            | CKR_CRYPTOKI_NOT_INITIALIZED
            | CKR_KEY_HANDLE_INVALID
    )
}

fn flip_bit(u: &mut Unstructured, v: &mut [u8]) -> AResult<()> {
    if !v.is_empty() {
        let i = u.int_in_range(0..=v.len() - 1)?;
        v[i] ^= 1 << u.int_in_range(0..=7u8)?;
    }
    Ok(())
}

/// A mechanism with parameters, owning their memory.
struct Params {
    mech: Mech,
    /// The parameters are the ones the spec allows for this key.
    valid: bool,
    /// Index in HASH_ALGS of hashAlg and of the MGF (PSS or OAEP).
    hash: Option<usize>,
    mgf: Option<usize>,
    salt: usize,
    label: Vec<u8>,
}

fn mech_of(ty: CK_MECHANISM_TYPE, mut param: Vec<u8>, label: Vec<u8>) -> Mech {
    let (p, len) = if param.is_empty() {
        (null_mut(), 0)
    } else {
        (param.as_mut_ptr() as *mut c_void, param.len() as CK_ULONG)
    };
    Mech {
        m: CK_MECHANISM {
            mechanism: ty,
            pParameter: p,
            ulParameterLen: len,
        },
        _param: param,
        _label: label,
    }
}

impl Harness {
    /// CKA_MODULUS of a key object (empty if unavailable).
    pub(super) fn modulus(&self, s: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> Vec<u8> {
        let mut buf = OutBuf::new(Some(1024));
        let mut t = CK_ATTRIBUTE {
            type_: CKA_MODULUS,
            pValue: buf.ptr() as *mut c_void,
            ulValueLen: 1024,
        };
        let rv = call!(self, C_GetAttributeValue(s, o, &mut t, 1));
        buf.check("C_GetAttributeValue(CKA_MODULUS)");
        if rv == CKR_OK {
            buf.bytes(t.ulValueLen as usize).to_vec()
        } else {
            Vec::new()
        }
    }

    /// Pairs the private and public keys of one session's token by modulus.
    pub(super) fn pair_keys(
        &mut self,
        s: CK_SESSION_HANDLE,
        keys: &[(CK_OBJECT_CLASS, CK_OBJECT_HANDLE, Vec<u8>)],
    ) {
        for (class, private, n) in keys {
            if *class != CKO_PRIVATE_KEY || n.is_empty() {
                continue;
            }
            if let Some((_, public, _)) =
                keys.iter().find(|(c, _, m)| *c == CKO_PUBLIC_KEY && m == n)
            {
                self.keypairs.push(KeyPair {
                    session: s,
                    private: *private,
                    public: *public,
                    modulus: n.clone(),
                });
            }
        }
    }

    /// A complete two-call exchange: the first buffer is the fuzzer's
    /// (NULL, short, exact or long), then the length the module asked for,
    /// until success or an error. Checks the guard bytes, the length rules,
    /// that a size query or a refused short buffer of an exact-length output
    /// did no private-key work and left the operation active. Returns the
    /// last return value and, on success, the output.
    fn exchange(
        &mut self,
        u: &mut Unstructured,
        name: &str,
        exact: bool,
        run: impl Fn(&Self, *mut u8, *mut CK_ULONG) -> CK_RV,
    ) -> AResult<(CK_RV, Vec<u8>)> {
        let mut len = Self::out_len(u)?;
        for _ in 0..3 {
            let mut out = OutBuf::new(len);
            let mut plen = Guarded::<CK_ULONG>::new();
            plen.value = len.unwrap_or(0) as CK_ULONG;
            let ops = self.private_ops();
            let rv = run(self, out.ptr(), &mut plen.value);
            out.check(name);
            plen.check(name);
            self.check_len(name, rv, len, plen.value);
            if len.is_none() || (exact && rv == CKR_BUFFER_TOO_SMALL) {
                assert_eq!(
                    self.private_ops(),
                    ops,
                    "{name}: a size query used the private key"
                );
            }
            match (rv, len) {
                (CKR_OK, Some(_)) => return Ok((rv, out.bytes(plen.value as usize).to_vec())),
                (CKR_OK, None) | (CKR_BUFFER_TOO_SMALL, _) => {
                    // The length asked for, sometimes with room to spare.
                    let extra = if u.ratio(1, 4)? {
                        u.int_in_range(1..=8)?
                    } else {
                        0
                    };
                    len = Some(plen.value as usize + extra);
                }
                _ => return Ok((rv, Vec::new())),
            }
        }
        panic!("{name}: no result with the buffer asked for");
    }

    /// PSS or OAEP parameters: valid for the key most of the time.
    fn scenario_params(
        &self,
        u: &mut Unstructured,
        ty: CK_MECHANISM_TYPE,
        mech_hash: Option<usize>,
        k: usize,
    ) -> AResult<Params> {
        let invalid = u.ratio(1, 10)?;
        if invalid {
            let mut mech = Self::mechanism(u)?;
            mech.m.mechanism = ty;
            return Ok(Params {
                mech,
                valid: false,
                hash: None,
                mgf: None,
                salt: 0,
                label: Vec::new(),
            });
        }
        let mut p = Params {
            mech: mech_of(ty, Vec::new(), Vec::new()),
            valid: true,
            hash: None,
            mgf: None,
            salt: 0,
            label: Vec::new(),
        };
        if is_pss(ty) {
            let h = match mech_hash {
                Some(h) => h,
                None => u.int_in_range(0..=4)?,
            };
            let m = u.int_in_range(0..=4)?;
            let hlen = HASH_ALGS[h].2;
            let max = k.saturating_sub(hlen + 2);
            let salt = match u.int_in_range(0..=5)? {
                0 => 0,
                1 | 2 => hlen.min(max),
                3 => max,
                // One too many: the spec's limit is emLen - hLen - 2.
                4 => {
                    p.valid = false;
                    max + 1
                }
                _ => u.int_in_range(0..=max)?,
            };
            p.hash = Some(h);
            p.mgf = Some(m);
            p.salt = salt;
            p.mech = mech_of(
                ty,
                bytes_of(&CK_RSA_PKCS_PSS_PARAMS {
                    hashAlg: HASH_ALGS[h].0,
                    mgf: HASH_ALGS[m].1,
                    sLen: salt as CK_ULONG,
                }),
                Vec::new(),
            );
        } else if ty == CKM_RSA_PKCS_OAEP {
            let h = u.int_in_range(0..=4)?;
            let m = u.int_in_range(0..=4)?;
            // Mostly printable labels, which the `rsa` crate can take too.
            let n = *u.choose(&[0usize, 0, 1, 8, 33])?;
            let mut label = take(u, n);
            if u.ratio(3, 4)? {
                label.iter_mut().for_each(|b| *b = b'a' + *b % 26);
            }
            let mut param = CK_RSA_PKCS_OAEP_PARAMS {
                hashAlg: HASH_ALGS[h].0,
                mgf: HASH_ALGS[m].1,
                source: CKZ_DATA_SPECIFIED,
                pSourceData: null_mut(),
                ulSourceDataLen: 0,
            };
            if !label.is_empty() {
                param.pSourceData = label.as_mut_ptr() as *mut c_void;
                param.ulSourceDataLen = label.len() as CK_ULONG;
            }
            p.valid = k >= 2 * HASH_ALGS[h].2 + 2;
            p.hash = Some(h);
            p.mgf = Some(m);
            p.label = label.clone();
            p.mech = mech_of(ty, bytes_of(&param), label);
        }
        Ok(p)
    }

    /// C_SignInit → C_Sign (or C_SignUpdate… C_SignFinal) on a private key,
    /// then C_VerifyInit → C_Verify (or C_VerifyUpdate… C_VerifyFinal) of
    /// the result, intact or corrupted, on its public key.
    pub(super) fn sign_verify(&mut self, u: &mut Unstructured) -> AResult<()> {
        if self.keypairs.is_empty() {
            return Ok(());
        }
        let kp = u.choose(&self.keypairs)?.clone();
        let k = kp.modulus.len();
        let &(ty, mech_hash) = u.choose(SIGN_MECHS)?;
        let mut p = self.scenario_params(u, ty, mech_hash, k)?;
        // Data that fits the mechanism, mostly.
        let mut data_ok = true;
        let data: Vec<u8> = match ty {
            CKM_RSA_PKCS => {
                let max = k - 11;
                let n = if u.ratio(1, 8)? {
                    data_ok = false;
                    u.int_in_range(max + 1..=k + 1)?
                } else {
                    u.int_in_range(0..=max)?
                };
                take(u, n)
            }
            CKM_RSA_X_509 => {
                if u.ratio(1, 8)? {
                    // As long as the modulus, maybe not below it.
                    data_ok = false;
                    take(u, k)
                } else {
                    let n = u.int_in_range(1..=k)?;
                    let mut v = take(u, n);
                    if n == k {
                        v[0] = 0;
                    }
                    v
                }
            }
            CKM_RSA_PKCS_PSS => {
                let hlen = p.hash.map_or(32, |h| HASH_ALGS[h].2);
                if u.ratio(1, 8)? {
                    data_ok = false;
                    let n = u.int_in_range(0..=70)?;
                    take(u, n)
                } else {
                    take(u, hlen)
                }
            }
            _ => {
                let n = u.int_in_range(0..=300)?;
                take(u, n)
            }
        };
        // Short data may run out of fuzzer bytes: then it is what it is.
        let data_ok = data_ok
            && match ty {
                CKM_RSA_PKCS_PSS => Some(data.len()) == p.hash.map(|h| HASH_ALGS[h].2),
                CKM_RSA_X_509 => !data.is_empty(),
                _ => true,
            };
        // Raw PKCS#1 v1.5 refuses keys too small for the DigestInfo.
        let key_ok = match mech_hash {
            Some(h) if !is_pss(ty) => HASH_ALGS[h].2 + if h == 0 { 15 } else { 19 } + 11 <= k,
            _ => true,
        };
        let multipart = mech_hash.is_some() && u.ratio(1, 2)?;
        let chunks = self.chunks(u, &data)?;
        let s = kp.session;
        let mp = &mut p.mech.m as *mut CK_MECHANISM;
        let rv = call!(self, C_SignInit(s, mp, kp.private));
        if p.valid && key_ok && !disturbed(rv) {
            assert_eq!(rv, CKR_OK, "C_SignInit of {ty:#x} with valid parameters");
        }
        if rv != CKR_OK {
            return Ok(());
        }
        let (name, rv, sig) = if multipart {
            for c in &chunks {
                let rv = call!(
                    self,
                    C_SignUpdate(s, c.as_ptr() as *mut u8, c.len() as CK_ULONG)
                );
                assert_eq!(rv, CKR_OK, "C_SignUpdate of {ty:#x}");
            }
            let (rv, sig) = self.exchange(u, "C_SignFinal", true, |h, o, l| {
                call!(h, C_SignFinal(s, o, l))
            })?;
            ("C_SignFinal", rv, sig)
        } else {
            let dp = data.as_ptr() as *mut u8;
            let dl = data.len() as CK_ULONG;
            let (rv, sig) = self.exchange(u, "C_Sign", true, |h, o, l| {
                call!(h, C_Sign(s, dp, dl, o, l))
            })?;
            ("C_Sign", rv, sig)
        };
        if data_ok {
            assert_eq!(rv, CKR_OK, "{name} of {ty:#x}, {} bytes", data.len());
        }
        if rv != CKR_OK {
            return Ok(());
        }
        assert_eq!(
            sig.len(),
            k,
            "{name}: a signature not as long as the modulus"
        );
        self.check_signature(&kp, ty, &p, &data, &sig);

        // Verify it, intact or not.
        let mut vdata = data.clone();
        let mut vsig = sig.clone();
        let corrupt = u.int_in_range(0..=5)?;
        match corrupt {
            3 => flip_bit(u, &mut vsig)?,
            4 if !vdata.is_empty() => flip_bit(u, &mut vdata)?,
            5 => {
                if u.ratio(1, 2)? {
                    vsig.truncate(u.int_in_range(0..=k - 1)?);
                } else {
                    vsig.push(u.arbitrary()?);
                }
            }
            _ => {}
        }
        let corrupted = vdata != data || vsig != sig;
        let rv = call!(self, C_VerifyInit(s, mp, kp.public));
        if disturbed(rv) {
            return Ok(());
        }
        assert_eq!(rv, CKR_OK, "C_VerifyInit after a successful C_SignInit");
        let vmulti = mech_hash.is_some() && u.ratio(1, 2)?;
        let sp = vsig.as_ptr() as *mut u8;
        let sl = vsig.len() as CK_ULONG;
        let rv = if vmulti {
            for c in self.chunks(u, &vdata)? {
                let rv = call!(
                    self,
                    C_VerifyUpdate(s, c.as_ptr() as *mut u8, c.len() as CK_ULONG)
                );
                assert_eq!(rv, CKR_OK, "C_VerifyUpdate of {ty:#x}");
            }
            call!(self, C_VerifyFinal(s, sp, sl))
        } else {
            let dp = vdata.as_ptr() as *mut u8;
            call!(self, C_Verify(s, dp, vdata.len() as CK_ULONG, sp, sl))
        };
        if corrupted {
            assert!(
                matches!(rv, CKR_SIGNATURE_INVALID | CKR_SIGNATURE_LEN_RANGE),
                "C_Verify of a corrupted {ty:#x} signature: {rv:#x}"
            );
        } else {
            assert_eq!(rv, CKR_OK, "C_Verify of a {ty:#x} signature just made");
        }
        // Either way the verification is over.
        let rv = call!(self, C_Verify(s, sp, sl, sp, sl));
        assert_eq!(rv, CKR_OPERATION_NOT_INITIALIZED, "C_Verify: still active");
        self.last = sig;
        Ok(())
    }

    /// The data in pieces for C_*Update, the empty piece included.
    fn chunks(&self, u: &mut Unstructured, data: &[u8]) -> AResult<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() && out.len() < 8 {
            let n = u.int_in_range(0..=rest.len())?;
            out.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        out.push(rest.to_vec());
        Ok(out)
    }

    /// The `rsa` crate's opinion of a signature the module made.
    fn check_signature(
        &self,
        kp: &KeyPair,
        ty: CK_MECHANISM_TYPE,
        p: &Params,
        data: &[u8],
        sig: &[u8],
    ) {
        let n = BigUint::from_bytes_be(&kp.modulus);
        let e = BigUint::from(65537u32);
        let public = RsaPublicKey::new(n.clone(), e.clone()).expect("a public key");
        let hashed_idx = SIGN_MECHS.iter().find(|m| m.0 == ty).and_then(|m| m.1);
        let ok = match ty {
            CKM_RSA_X_509 => {
                BigUint::from_bytes_be(sig).modpow(&e, &n) == BigUint::from_bytes_be(data)
            }
            CKM_RSA_PKCS => public
                .verify(Pkcs1v15Sign::new_unprefixed(), data, sig)
                .is_ok(),
            _ if is_pss(ty) => {
                let (Some(h), Some(m)) = (p.hash, p.mgf) else {
                    return;
                };
                // The crate's MGF1 uses the message hash.
                if h != m {
                    return;
                }
                let hashed = match hashed_idx {
                    Some(i) => digest(i, data),
                    None => data.to_vec(),
                };
                let scheme = Pss {
                    blinded: false,
                    digest: dyn_digest(h),
                    salt_len: p.salt,
                };
                public.verify(scheme, &hashed, sig).is_ok()
            }
            _ => {
                let i = hashed_idx.expect("a hashed PKCS#1 mechanism");
                public
                    .verify(pkcs1_scheme(i), &digest(i, data), sig)
                    .is_ok()
            }
        };
        assert!(ok, "the rsa crate rejects a {ty:#x} signature from C_Sign");
    }

    /// C_EncryptInit → C_Encrypt on a public key, then C_DecryptInit →
    /// C_Decrypt of that ciphertext, intact or corrupted, on its private key.
    pub(super) fn encrypt_decrypt(&mut self, u: &mut Unstructured) -> AResult<()> {
        if self.keypairs.is_empty() {
            return Ok(());
        }
        let kp = u.choose(&self.keypairs)?.clone();
        let k = kp.modulus.len();
        let ty = *u.choose(&[CKM_RSA_PKCS, CKM_RSA_PKCS_OAEP, CKM_RSA_X_509])?;
        let mut p = self.scenario_params(u, ty, None, k)?;
        let max = match ty {
            CKM_RSA_PKCS => k - 11,
            CKM_RSA_PKCS_OAEP => {
                let h = p.hash.map_or(0, |h| HASH_ALGS[h].2);
                k.saturating_sub(2 * h + 2)
            }
            _ => k,
        };
        let over = u.ratio(1, 8)?;
        let len = if over {
            u.int_in_range(max + 1..=max + 8)?
        } else {
            u.int_in_range(0..=max)?
        };
        let mut msg = take(u, len);
        if ty == CKM_RSA_X_509 && msg.len() == k {
            msg[0] = 0;
        }
        let msg_ok = msg.len() <= max && !(ty == CKM_RSA_X_509 && msg.is_empty());
        let s = kp.session;
        let mp = &mut p.mech.m as *mut CK_MECHANISM;
        let rv = call!(self, C_EncryptInit(s, mp, kp.public));
        if p.valid && !disturbed(rv) {
            assert_eq!(rv, CKR_OK, "C_EncryptInit of {ty:#x} with valid parameters");
        }
        if rv != CKR_OK {
            return Ok(());
        }
        let (mptr, mlen) = (msg.as_ptr() as *mut u8, msg.len() as CK_ULONG);
        let (rv, ct) = self.exchange(u, "C_Encrypt", true, |h, o, l| {
            call!(h, C_Encrypt(s, mptr, mlen, o, l))
        })?;
        if msg_ok {
            assert_eq!(rv, CKR_OK, "C_Encrypt of {ty:#x}, {} bytes", msg.len());
        } else if msg.len() > max {
            assert_ne!(rv, CKR_OK, "C_Encrypt of {} bytes, over {max}", msg.len());
        }
        if rv != CKR_OK {
            return Ok(());
        }
        assert_eq!(
            ct.len(),
            k,
            "C_Encrypt: a ciphertext not as long as the modulus"
        );
        self.check_ciphertext(&kp, ty, &p, &msg, &ct);

        let mut vct = ct.clone();
        match u.int_in_range(0..=5)? {
            3 => flip_bit(u, &mut vct)?,
            4 => {
                if u.ratio(1, 2)? {
                    vct.truncate(u.int_in_range(0..=k - 1)?);
                } else {
                    vct.push(u.arbitrary()?);
                }
            }
            5 => vct = take(u, k),
            _ => {}
        }
        let corrupted = vct != ct;
        let rv = call!(self, C_DecryptInit(s, mp, kp.private));
        if disturbed(rv) {
            return Ok(());
        }
        assert_eq!(rv, CKR_OK, "C_DecryptInit after a successful C_EncryptInit");
        let (cptr, clen) = (vct.as_ptr() as *mut u8, vct.len() as CK_ULONG);
        let (rv, pt) = self.exchange(u, "C_Decrypt", false, |h, o, l| {
            call!(h, C_Decrypt(s, cptr, clen, o, l))
        })?;
        let same = |pt: &[u8]| {
            if ty == CKM_RSA_X_509 {
                BigUint::from_bytes_be(pt) == BigUint::from_bytes_be(&msg)
            } else {
                pt == msg.as_slice()
            }
        };
        if !corrupted {
            assert_eq!(rv, CKR_OK, "C_Decrypt of a {ty:#x} ciphertext just made");
            assert!(same(&pt), "C_Decrypt(C_Encrypt(m)) != m for {ty:#x}");
        } else if rv == CKR_OK && vct.len() == k {
            // A changed ciphertext of the right length cannot decrypt to the
            // same message (RSA is a permutation below the modulus).
            assert!(
                !same(&pt),
                "C_Decrypt of a corrupted {ty:#x} ciphertext gave m"
            );
        }
        if rv == CKR_OK {
            self.last = pt;
        }
        Ok(())
    }

    /// The `rsa` crate decrypts what the module encrypted.
    fn check_ciphertext(
        &self,
        kp: &KeyPair,
        ty: CK_MECHANISM_TYPE,
        p: &Params,
        msg: &[u8],
        ct: &[u8],
    ) {
        let k = keys();
        let Some(key) = [&k.k2048, &k.k1024a, &k.k1024b]
            .into_iter()
            .find(|key| key.n().to_bytes_be() == kp.modulus)
        else {
            return;
        };
        match ty {
            CKM_RSA_PKCS => {
                let m = key
                    .decrypt(Pkcs1v15Encrypt, ct)
                    .expect("the rsa crate decrypts");
                assert_eq!(
                    m, msg,
                    "C_Encrypt (PKCS#1): the rsa crate decrypts another message"
                );
            }
            CKM_RSA_PKCS_OAEP => {
                let (Some(h), Some(m)) = (p.hash, p.mgf) else {
                    return;
                };
                let Ok(label) = String::from_utf8(p.label.clone()) else {
                    return;
                };
                let scheme = Oaep {
                    digest: dyn_digest(h),
                    mgf_digest: dyn_digest(m),
                    label: (!label.is_empty()).then_some(label),
                };
                let m = key
                    .decrypt(scheme, ct)
                    .expect("the rsa crate decrypts OAEP");
                assert_eq!(
                    m, msg,
                    "C_Encrypt (OAEP): the rsa crate decrypts another message"
                );
            }
            _ => {
                let m = BigUint::from_bytes_be(ct).modpow(key.d(), key.n());
                assert_eq!(m, BigUint::from_bytes_be(msg), "C_Encrypt (X.509)");
            }
        }
    }
}
