//! Well-formed creation templates, then mutated. Random attribute lists
//! almost never make a valid RSA key, so everything after the first template
//! check (the PKCS#8 encoding, the consistency check of the two halves, the
//! metadata record, certificates, the rollback when a later step fails)
//! would go unfuzzed. Here a template starts as a client would send it: a
//! full RSA private key from a known key pair (every CRT part, n/e/d only,
//! or PKCS#8 in `CKA_VALUE`), a public key that matches a key in the token
//! or not, an X.509 certificate of a known key, a key-pair generation; then
//! a few mutations drop, repeat, corrupt or add attributes, so that many
//! calls succeed and the rest fail at every stage.

use crate::args::{Bytes, Mostly, Ulong};
use crate::keys::keys;
use crate::mechanism::MECHS;
use crate::template::{Attr, AttrSpec, attr_type};
use arbitrary::Arbitrary;
use cryptoki_sys::*;
use keyring_pkcs11::RsaPublic;
use rsa::RsaPrivateKey;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};

/// One of `keys::Keys::known`, in that order.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum KeyName {
    /// In no token.
    Import,
    /// In no token.
    Import2,
    /// In the user and process tokens.
    K1024a,
    /// In the session token (and revoked in the process token).
    K1024b,
    /// In the user and "work" tokens.
    K2048,
}

impl KeyName {
    fn known(self) -> &'static crate::keys::Known {
        &keys().known[self as usize]
    }
}

/// What to create, complete and consistent.
#[derive(Arbitrary, Debug, Clone)]
pub enum Object {
    PrivateKey {
        key: KeyName,
        form: PrivateForm,
        extra: Typical,
    },
    /// Accepted only where its private key is in the token.
    PublicKey {
        key: KeyName,
        extra: Typical,
    },
    Certificate {
        key: KeyName,
        extra: Typical,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum PrivateForm {
    /// n, e, d, p, q, d mod (p-1), d mod (q-1), q⁻¹ mod p.
    Crt,
    /// n, e, d: the primes must be recovered.
    Ned,
    /// n, e, d, p, q without the CRT exponents.
    NedPrimes,
    /// PKCS#8 `PrivateKeyInfo` DER in `CKA_VALUE`.
    Pkcs8,
}

/// What a client adds beyond the key material (pkcs11-tool and p11-kit
/// send a label, an ID, `CKA_TOKEN` and the usage flags).
#[derive(Arbitrary, Debug, Clone)]
pub struct Typical {
    pub label: Option<Label>,
    pub id: Option<Id>,
    pub token: bool,
    pub usage: bool,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Label {
    /// One of a few names, so that two objects sometimes share one.
    Fresh(u8),
    /// The label of the 2048-bit key in the user and "work" tokens.
    Taken,
    Empty,
    Bytes(Bytes),
}

impl Label {
    fn value(&self) -> Vec<u8> {
        match self {
            Label::Fresh(n) => format!("key-{}", n % 4).into_bytes(),
            Label::Taken => b"user-2048".to_vec(),
            Label::Empty => Vec::new(),
            Label::Bytes(b) => b.0.clone(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Id {
    /// The key's own: SHA-1 of its RSAPublicKey, which it has anyway.
    Derived,
    Short(u8),
    Bytes(Bytes),
}

/// What the key's ID is by default (see `RsaPublic::key_id`).
fn derived_id(key: &RsaPrivateKey) -> Vec<u8> {
    RsaPublic {
        modulus: key.n().to_bytes_be(),
        exponent: key.e().to_bytes_be(),
    }
    .key_id()
}

impl Id {
    pub fn value(&self, key: &RsaPrivateKey) -> Vec<u8> {
        match self {
            Id::Derived => derived_id(key),
            Id::Short(n) => vec![*n],
            Id::Bytes(b) => b.0.clone(),
        }
    }
}

/// A change to a well-formed template. Indices wrap around its length.
#[derive(Arbitrary, Debug, Clone)]
pub enum Mutation {
    Drop(u8),
    /// The same attribute twice, same value.
    Repeat(u8),
    /// The same attribute twice, another value.
    Conflict(u8, Value),
    Corrupt(u8, Corruption),
    Add(Extra),
    /// Order must not matter.
    Swap(u8, u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Value {
    Bool(bool),
    Ulong(Ulong),
    Bytes(Bytes),
}

impl Value {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Bool(b) => vec![CK_BBOOL::from(*b)],
            Value::Ulong(v) => v.value().to_ne_bytes().to_vec(),
            Value::Bytes(b) => b.0.clone(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Corruption {
    FlipBit(u16, u8),
    Truncate(u16),
    Append(u8),
    Empty,
    /// A leading zero byte: the same big integer, another encoding.
    LeadingZero,
    /// NULL, with a length of 0 or more; rarely a length no buffer has
    /// (see `Attr::null_or_huge`).
    Null(u8),
    /// A CK_BBOOL as a CK_ULONG and the other way round.
    WrongWidth,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Extra {
    Flag(Flag, bool),
    /// Indices into `mechanism::MECHS`.
    AllowedMechanisms(Vec<u8>),
    Label(Label),
    Id(Id),
    /// Empty, or a `CK_DATE`.
    Date {
        end: bool,
        value: Option<[u8; 8]>,
    },
    Any(AttrSpec),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Flag {
    Token,
    Private,
    Sensitive,
    Extractable,
    Sign,
    SignRecover,
    Verify,
    VerifyRecover,
    Encrypt,
    Decrypt,
    Wrap,
    Unwrap,
    Derive,
    Modifiable,
    Copyable,
    Destroyable,
    AlwaysAuthenticate,
    Trusted,
    Local,
    NeverExtractable,
    AlwaysSensitive,
    WrapWithTrusted,
}

impl Flag {
    fn attr(self) -> CK_ATTRIBUTE_TYPE {
        match self {
            Flag::Token => CKA_TOKEN,
            Flag::Private => CKA_PRIVATE,
            Flag::Sensitive => CKA_SENSITIVE,
            Flag::Extractable => CKA_EXTRACTABLE,
            Flag::Sign => CKA_SIGN,
            Flag::SignRecover => CKA_SIGN_RECOVER,
            Flag::Verify => CKA_VERIFY,
            Flag::VerifyRecover => CKA_VERIFY_RECOVER,
            Flag::Encrypt => CKA_ENCRYPT,
            Flag::Decrypt => CKA_DECRYPT,
            Flag::Wrap => CKA_WRAP,
            Flag::Unwrap => CKA_UNWRAP,
            Flag::Derive => CKA_DERIVE,
            Flag::Modifiable => CKA_MODIFIABLE,
            Flag::Copyable => CKA_COPYABLE,
            Flag::Destroyable => CKA_DESTROYABLE,
            Flag::AlwaysAuthenticate => CKA_ALWAYS_AUTHENTICATE,
            Flag::Trusted => CKA_TRUSTED,
            Flag::Local => CKA_LOCAL,
            Flag::NeverExtractable => CKA_NEVER_EXTRACTABLE,
            Flag::AlwaysSensitive => CKA_ALWAYS_SENSITIVE,
            Flag::WrapWithTrusted => CKA_WRAP_WITH_TRUSTED,
        }
    }
}

/// At most this many mutations of one template.
const MUTATIONS: usize = 4;

fn mutate(attrs: &mut Vec<Attr>, mutations: &[Mutation]) {
    for m in mutations.iter().take(MUTATIONS) {
        let at = |i: &u8, attrs: &Vec<Attr>| usize::from(*i) % attrs.len().max(1);
        match m {
            Mutation::Add(e) => attrs.push(extra(e)),
            _ if attrs.is_empty() => {}
            Mutation::Drop(i) => {
                attrs.remove(at(i, attrs));
            }
            Mutation::Repeat(i) => attrs.push(attrs[at(i, attrs)].clone()),
            Mutation::Conflict(i, v) => {
                let ty = attrs[at(i, attrs)].ty;
                attrs.push(Attr::new(ty, v.bytes()));
            }
            Mutation::Corrupt(i, c) => {
                let i = at(i, attrs);
                attrs[i] = corrupt(&attrs[i], *c);
            }
            Mutation::Swap(i, j) => {
                let (i, j) = (at(i, attrs), at(j, attrs));
                attrs.swap(i, j);
            }
        }
    }
}

fn corrupt(a: &Attr, c: Corruption) -> Attr {
    let mut v = a.value.clone().unwrap_or_default();
    match c {
        Corruption::FlipBit(i, bit) => {
            if !v.is_empty() {
                let i = usize::from(i) % v.len();
                v[i] ^= 1 << (bit % 8);
            }
        }
        Corruption::Truncate(n) => v.truncate(usize::from(n) % (v.len() + 1)),
        Corruption::Append(b) => v.push(b),
        Corruption::Empty => v.clear(),
        Corruption::LeadingZero => v.insert(0, 0),
        Corruption::Null(n) => return Attr::null_or_huge(a.ty, n),
        Corruption::WrongWidth => {
            v = match v.len() {
                1 => CK_ULONG::from(v[0]).to_ne_bytes().to_vec(),
                8 => vec![v[0]],
                _ => vec![0; 4],
            }
        }
    }
    Attr::new(a.ty, v)
}

pub fn extra(e: &Extra) -> Attr {
    match e {
        Extra::Flag(f, v) => Attr::bool(f.attr(), *v),
        Extra::AllowedMechanisms(list) => Attr::new(
            CKA_ALLOWED_MECHANISMS,
            list.iter()
                .take(8)
                .flat_map(|i| MECHS[usize::from(*i) % MECHS.len()].to_ne_bytes())
                .collect(),
        ),
        Extra::Label(l) => Attr::new(CKA_LABEL, l.value()),
        Extra::Id(id) => Attr::new(CKA_ID, id.value(&keys().known[0].key)),
        Extra::Date { end, value } => Attr::new(
            if *end { CKA_END_DATE } else { CKA_START_DATE },
            value.map(|d| d.to_vec()).unwrap_or_default(),
        ),
        Extra::Any(spec) => spec.value.attr(attr_type(spec.ty)),
    }
}

fn typical(
    attrs: &mut Vec<Attr>,
    t: &Typical,
    key: &RsaPrivateKey,
    usage: &[(CK_ATTRIBUTE_TYPE, bool)],
) {
    if t.token {
        attrs.push(Attr::bool(CKA_TOKEN, true));
    }
    if let Some(l) = &t.label {
        attrs.push(Attr::new(CKA_LABEL, l.value()));
    }
    if let Some(id) = &t.id {
        attrs.push(Attr::new(CKA_ID, id.value(key)));
    }
    if t.usage {
        attrs.extend(usage.iter().map(|(ty, v)| Attr::bool(*ty, *v)));
    }
}

const PRIVATE_USAGE: &[(CK_ATTRIBUTE_TYPE, bool)] = &[
    (CKA_PRIVATE, true),
    (CKA_SENSITIVE, true),
    (CKA_SIGN, true),
    (CKA_DECRYPT, true),
];
const PUBLIC_USAGE: &[(CK_ATTRIBUTE_TYPE, bool)] = &[(CKA_VERIFY, true), (CKA_ENCRYPT, true)];

fn big(n: &rsa::BigUint) -> Vec<u8> {
    n.to_bytes_be()
}

/// `C_CreateObject`'s template.
#[derive(Arbitrary, Debug, Clone)]
pub struct Create {
    pub object: Object,
    pub mutations: Vec<Mutation>,
}

impl Create {
    pub fn build(&self) -> Vec<Attr> {
        let mut attrs = match &self.object {
            Object::PrivateKey { key, form, extra } => {
                let k = &key.known().key;
                let mut a = vec![
                    Attr::ulong(CKA_CLASS, CKO_PRIVATE_KEY),
                    Attr::ulong(CKA_KEY_TYPE, CKK_RSA),
                ];
                let ned = |a: &mut Vec<Attr>| {
                    a.push(Attr::new(CKA_MODULUS, big(k.n())));
                    a.push(Attr::new(CKA_PUBLIC_EXPONENT, big(k.e())));
                    a.push(Attr::new(CKA_PRIVATE_EXPONENT, big(k.d())));
                };
                let primes = |a: &mut Vec<Attr>| {
                    a.push(Attr::new(CKA_PRIME_1, big(&k.primes()[0])));
                    a.push(Attr::new(CKA_PRIME_2, big(&k.primes()[1])));
                };
                match form {
                    PrivateForm::Crt => {
                        ned(&mut a);
                        primes(&mut a);
                        a.push(Attr::new(CKA_EXPONENT_1, big(k.dp().expect("dp"))));
                        a.push(Attr::new(CKA_EXPONENT_2, big(k.dq().expect("dq"))));
                        let qinv = k.crt_coefficient().expect("qinv");
                        a.push(Attr::new(CKA_COEFFICIENT, big(&qinv)));
                    }
                    PrivateForm::Ned => ned(&mut a),
                    PrivateForm::NedPrimes => {
                        ned(&mut a);
                        primes(&mut a);
                    }
                    PrivateForm::Pkcs8 => a.push(Attr::new(CKA_VALUE, key.known().pkcs8.clone())),
                }
                typical(&mut a, extra, k, PRIVATE_USAGE);
                a
            }
            Object::PublicKey { key, extra } => {
                let k = &key.known().key;
                let mut a = vec![
                    Attr::ulong(CKA_CLASS, CKO_PUBLIC_KEY),
                    Attr::ulong(CKA_KEY_TYPE, CKK_RSA),
                    Attr::new(CKA_MODULUS, big(k.n())),
                    Attr::new(CKA_PUBLIC_EXPONENT, big(k.e())),
                ];
                typical(&mut a, extra, k, PUBLIC_USAGE);
                a
            }
            Object::Certificate { key, extra } => {
                let known = key.known();
                let mut a = vec![
                    Attr::ulong(CKA_CLASS, CKO_CERTIFICATE),
                    Attr::ulong(CKA_CERTIFICATE_TYPE, CKC_X_509),
                    Attr::new(CKA_VALUE, known.cert.clone()),
                ];
                typical(&mut a, extra, &known.key, &[]);
                if extra.usage {
                    a.extend(cert_names(&known.cert));
                }
                a
            }
        };
        mutate(&mut attrs, &self.mutations);
        attrs
    }
}

/// CKA_SUBJECT, CKA_ISSUER and CKA_SERIAL_NUMBER, as pkcs11-tool sends them.
fn cert_names(der: &[u8]) -> Vec<Attr> {
    use x509_cert::der::{Decode, Encode};
    let c = x509_cert::Certificate::from_der(der).expect("our certificate");
    let tbs = &c.tbs_certificate;
    vec![
        Attr::new(CKA_SUBJECT, tbs.subject.to_der().expect("DER")),
        Attr::new(CKA_ISSUER, tbs.issuer.to_der().expect("DER")),
        Attr::new(CKA_SERIAL_NUMBER, tbs.serial_number.to_der().expect("DER")),
    ]
}

/// `C_GenerateKeyPair`'s mechanism and two templates.
#[derive(Arbitrary, Debug, Clone)]
pub struct Generate {
    pub bits: Bits,
    pub exponent: Exponent,
    /// CKA_CLASS and CKA_KEY_TYPE in the templates, as some clients send.
    pub classes: bool,
    pub public: Typical,
    pub private: Typical,
    /// Each to the public (false) or private (true) template.
    pub mutations: Vec<(bool, Mutation)>,
    /// Rarely another mechanism, or parameters.
    pub mechanism: Mostly<(), crate::mechanism::MechSpec>,
}

/// 2048 bits, or rarely another size: keys of 3072 and 4096 bits cost
/// several times as much in every later operation.
pub type Bits = Mostly<(), OtherBits>;

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum OtherBits {
    B3072,
    B4096,
    /// Absent.
    None,
    Other(Ulong),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Exponent {
    /// Absent: 65537.
    Default,
    F4,
    Three,
    Other(Bytes),
}

impl Generate {
    /// The public and private templates.
    pub fn build(&self) -> (Vec<Attr>, Vec<Attr>) {
        // The ID a client gives both halves is its own choice; a derived one
        // is the first pool key's.
        let key = &keys().pool[0];
        let mut public = Vec::new();
        let mut private = Vec::new();
        if self.classes {
            public.push(Attr::ulong(CKA_CLASS, CKO_PUBLIC_KEY));
            public.push(Attr::ulong(CKA_KEY_TYPE, CKK_RSA));
            private.push(Attr::ulong(CKA_CLASS, CKO_PRIVATE_KEY));
            private.push(Attr::ulong(CKA_KEY_TYPE, CKK_RSA));
        }
        let bits: Option<CK_ULONG> = match self.bits {
            Mostly::Usual(()) => Some(2048),
            Mostly::Odd(OtherBits::B3072) => Some(3072),
            Mostly::Odd(OtherBits::B4096) => Some(4096),
            Mostly::Odd(OtherBits::None) => None,
            Mostly::Odd(OtherBits::Other(v)) => Some(v.value()),
        };
        if let Some(b) = bits {
            public.push(Attr::ulong(CKA_MODULUS_BITS, b));
        }
        let e = match &self.exponent {
            Exponent::Default => None,
            Exponent::F4 => Some(vec![1, 0, 1]),
            Exponent::Three => Some(vec![3]),
            Exponent::Other(b) => Some(b.0.clone()),
        };
        if let Some(e) = e {
            public.push(Attr::new(CKA_PUBLIC_EXPONENT, e));
        }
        typical(&mut public, &self.public, key, PUBLIC_USAGE);
        typical(&mut private, &self.private, key, PRIVATE_USAGE);
        let (to_public, to_private): (Vec<_>, Vec<_>) =
            self.mutations.iter().take(MUTATIONS).partition(|(p, _)| !p);
        let strip = |v: Vec<&(bool, Mutation)>| -> Vec<Mutation> {
            v.into_iter().map(|(_, m)| m.clone()).collect()
        };
        mutate(&mut public, &strip(to_public));
        mutate(&mut private, &strip(to_private));
        (public, private)
    }
}
