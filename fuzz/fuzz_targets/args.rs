//! The arguments of a call as the fuzzer chooses them: handles, input data,
//! output lengths, integers. Each is a small derived type that names the kind
//! of value a client might pass (the latest session, a made-up handle, a
//! digest-sized input, NULL with a length); [`Harness`] turns it into the
//! value of this moment (the latest session *now*).

use crate::buffers::OutBuf;
use crate::harness::Harness;
use crate::keys::keys;
use arbitrary::{Arbitrary, Result, Unstructured};
use cryptoki_sys::*;
use rsa::traits::PublicKeyParts;

/// `true` one time in sixteen: the NULL pointers and odd claims that a real
/// client passes rarely, so that most calls get past the argument checks.
/// A zero byte (what a short input reads) is `false`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rare(pub bool);

impl<'a> Arbitrary<'a> for Rare {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Rare(u8::arbitrary(u)? >= 240))
    }

    fn size_hint(_: usize) -> (usize, Option<usize>) {
        (1, Some(1))
    }
}

/// The usual value, or one time in sixteen an odd one.
#[derive(Debug, Clone, Copy)]
pub enum Mostly<T, U> {
    Usual(T),
    Odd(U),
}

impl<'a, T: Arbitrary<'a>, U: Arbitrary<'a>> Arbitrary<'a> for Mostly<T, U> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(if Rare::arbitrary(u)?.0 {
            Mostly::Odd(U::arbitrary(u)?)
        } else {
            Mostly::Usual(T::arbitrary(u)?)
        })
    }
}

/// Rarely (one time in sixteen) a value, else none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rarely<T>(pub Option<T>);

impl<'a, T: Arbitrary<'a>> Arbitrary<'a> for Rarely<T> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Rarely(if Rare::arbitrary(u)?.0 {
            Some(T::arbitrary(u)?)
        } else {
            None
        }))
    }
}

/// Bytes chosen by the fuzzer: a length byte, then the bytes. Not a
/// derived `Vec<u8>`, which spends two input bytes on each, nor `&[u8]`,
/// whose length is any part of what is left of the input: one buffer
/// swallowed half the calls that followed it.
#[derive(Clone, Default)]
pub struct Bytes(pub Vec<u8>);

impl<'a> Arbitrary<'a> for Bytes {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        // Mostly short (0–47 bytes), a quarter of the time up to 300.
        let n = match u8::arbitrary(u)? {
            b @ 0..192 => usize::from(b % 48),
            b => 48 + 4 * usize::from(b - 192),
        };
        Ok(Bytes(u.bytes(n.min(u.len()))?.to_vec()))
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{:02x?}", self.0)
    }
}

impl Bytes {
    /// Exactly `n` bytes: these, then zeros once they run out.
    pub fn sized(&self, n: usize) -> Vec<u8> {
        let mut v = self.0.clone();
        v.resize(n, 0);
        v
    }
}

/// A handle no module gave out, or not for this.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum BadHandle {
    Zero,
    /// One of the first few: handles are counted from 1 and never reused,
    /// so these are an earlier input's.
    Small(u8),
    Any(CK_ULONG),
}

impl BadHandle {
    fn value(self) -> CK_ULONG {
        match self {
            BadHandle::Zero => 0,
            BadHandle::Small(n) => CK_ULONG::from(n % 41),
            BadHandle::Any(h) => h,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum SessionRef {
    /// The latest session opened, as a client mostly uses one.
    Latest,
    /// Any session opened in this input (maybe closed since).
    Known(u8),
    Bad(BadHandle),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum ObjectRef {
    /// The latest object found or created.
    Latest,
    /// Any object learnt in this input (maybe destroyed since).
    Known(u8),
    Bad(BadHandle),
}

/// A session and an object for the calls that take both.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Target {
    /// The latest object with the session it was found or created in.
    Latest,
    /// An object with a session of its token.
    Pair(u8),
    /// A private key with a session of its token.
    PrivateKey(u8),
    /// The public key of a key pair with a session of its token.
    PublicKey(u8),
    Apart(SessionRef, ObjectRef),
}

/// Slots 0–5 are the tokens (see `harness::fresh_store`); 6 is one past.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum SlotRef {
    Slot(u8),
    Any(CK_SLOT_ID),
}

impl SlotRef {
    pub fn value(self) -> CK_SLOT_ID {
        match self {
            SlotRef::Slot(n) => CK_SLOT_ID::from(n % 7),
            SlotRef::Any(s) => s,
        }
    }
}

/// A `CK_ULONG` attribute value: one that means something, or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Ulong {
    Listed(u8),
    Any(CK_ULONG),
}

const ULONG_VALUES: &[CK_ULONG] = &[
    CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
    CKO_CERTIFICATE,
    CKO_DATA,
    CKO_SECRET_KEY,
    CKK_RSA,
    CKK_EC,
    CKC_X_509,
    0,
    1,
    512,
    1024,
    2047,
    2048,
    65537,
    CK_UNAVAILABLE_INFORMATION,
];

impl Ulong {
    pub fn value(self) -> CK_ULONG {
        match self {
            Ulong::Listed(i) => ULONG_VALUES[usize::from(i) % ULONG_VALUES.len()],
            Ulong::Any(v) => v,
        }
    }
}

/// Sizes of digests (and of the hashes' DigestInfo-less inputs).
const DIGEST_LENS: [usize; 5] = [20, 28, 32, 48, 64];

/// An input buffer. The harness never lies about one: the memory behind
/// the pointer is exactly as long as claimed, so any over-read is
/// AddressSanitizer's to see.
#[derive(Arbitrary, Debug, Clone)]
pub enum Data {
    Bytes(Bytes),
    /// The output of the last successful operation (a signature to verify,
    /// a ciphertext to decrypt).
    Last,
    /// As long as a digest.
    DigestSized(u8, Bytes),
    /// One byte short of a 2048-bit (or 1024-bit) modulus, so below it.
    BelowModulus {
        big: bool,
        value: Bytes,
    },
    /// A known key's modulus itself: the first value not below it.
    Modulus {
        big: bool,
    },
    /// NULL, with a length of 0 or more; one time in sixteen (a claim of
    /// 0xf000 or more) a real byte with a length no buffer has
    /// (`buffers::HUGE`).
    Null {
        claim: u16,
    },
}

/// Output buffer lengths worth trying: around digest and RSA sizes.
const LENGTHS: &[usize] = &[
    0, 1, 16, 20, 28, 32, 48, 64, 117, 127, 128, 129, 255, 256, 257, 512,
];

/// The room given for an output.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum OutLen {
    /// A NULL buffer (a size query), with whatever length beside it.
    Null {
        claim: CK_ULONG,
    },
    /// One of `LENGTHS`; one time in sixteen (240 or more) a 64-byte
    /// buffer with a length no buffer has (`buffers::HUGE`).
    Listed(u8),
    Any(u16),
}

impl OutLen {
    pub fn room(self) -> Option<usize> {
        match self {
            OutLen::Null { .. } => None,
            OutLen::Listed(i) if i >= 240 => Some(64),
            OutLen::Listed(i) => Some(LENGTHS[usize::from(i) % LENGTHS.len()]),
            OutLen::Any(n) => Some(usize::from(n) % 601),
        }
    }

    /// The length passed in beside the buffer.
    pub fn claim(self) -> CK_ULONG {
        match (self, self.room()) {
            (OutLen::Null { claim }, _) => claim,
            (OutLen::Listed(i), _) if i >= 240 => crate::buffers::huge(i),
            (_, Some(n)) => n as CK_ULONG,
            _ => unreachable!(),
        }
    }

    /// The same, capped: for arrays of handles and slot IDs.
    pub fn capped(self, max: usize) -> OutLen {
        match self.room() {
            Some(n) => OutLen::Any((n % max) as u16),
            None => self,
        }
    }
}

impl Harness {
    pub fn session(&self, r: SessionRef) -> CK_SESSION_HANDLE {
        match r {
            SessionRef::Latest => self.sessions.last().copied().unwrap_or(1),
            SessionRef::Known(i) => pick(&self.sessions, i).unwrap_or(1),
            SessionRef::Bad(b) => b.value(),
        }
    }

    pub fn object(&self, r: ObjectRef) -> CK_OBJECT_HANDLE {
        match r {
            ObjectRef::Latest => self.objects.last().copied().unwrap_or(1),
            ObjectRef::Known(i) => pick(&self.objects, i).unwrap_or(1),
            ObjectRef::Bad(b) => b.value(),
        }
    }

    pub fn target(&self, t: Target) -> (CK_SESSION_HANDLE, CK_OBJECT_HANDLE) {
        let apart = (
            self.session(SessionRef::Latest),
            self.object(ObjectRef::Latest),
        );
        match t {
            Target::Latest => self.pairs.last().copied().unwrap_or(apart),
            Target::Pair(i) => pick(&self.pairs, i).unwrap_or(apart),
            Target::PrivateKey(i) => pick(&self.private, i)
                .or_else(|| self.pairs.last().copied())
                .unwrap_or(apart),
            Target::PublicKey(i) => pick(&self.keypairs, i)
                .map(|k| (k.session, k.public))
                .unwrap_or(apart),
            Target::Apart(s, o) => (self.session(s), self.object(o)),
        }
    }

    /// The buffer (maybe NULL) and the length passed beside it.
    pub fn data(&self, d: &Data) -> (OutBuf, CK_ULONG) {
        let k = keys();
        let modulus = |big: bool| if big { &k.k2048 } else { &k.k1024a }.n().to_bytes_be();
        let v = match d {
            Data::Null { claim } if *claim >= 0xf000 => {
                let huge = crate::buffers::huge(*claim as u8);
                return (OutBuf::input(vec![0]), huge);
            }
            Data::Null { claim } => {
                let claim = if claim % 2 == 0 { 0 } else { 1 + claim % 512 };
                return (OutBuf::new(None), CK_ULONG::from(claim));
            }
            Data::Bytes(b) => b.0.clone(),
            Data::Last => self.last.clone(),
            Data::DigestSized(i, b) => b.sized(DIGEST_LENS[usize::from(*i) % DIGEST_LENS.len()]),
            Data::BelowModulus { big, value } => {
                let n = modulus(*big).len();
                let mut v = value.sized(n);
                v[0] = 0;
                v
            }
            Data::Modulus { big } => modulus(*big),
        };
        let len = v.len() as CK_ULONG;
        // Odd lengths off alignment: nothing promises a byte buffer any.
        let misaligned = v.len() % 2 == 1;
        (OutBuf::input_at(v, misaligned), len)
    }
}

fn pick<T: Clone>(v: &[T], i: u8) -> Option<T> {
    (!v.is_empty()).then(|| v[usize::from(i) % v.len()].clone())
}
