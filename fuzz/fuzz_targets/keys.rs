//! The keys the harness knows: fixed RSA keys (generating keys in an
//! instrumented build takes most of a minute, and fixed keys make every
//! failing input reproduce), their PKCS#8 encodings and X.509 certificates,
//! and the pool `C_GenerateKeyPair` draws from in the mock build.

use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::EncodePrivateKey;
use rsa::{BigUint, RsaPrivateKey};
use sha2::Sha256;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::Encode;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

/// One key the harness can offer to `C_CreateObject`, with what a client
/// would have of it.
pub struct Known {
    pub key: RsaPrivateKey,
    pub pkcs8: Vec<u8>,
    /// A self-signed certificate of the key.
    pub cert: Vec<u8>,
}

pub struct Keys {
    /// In the user and "work" tokens.
    pub k2048: RsaPrivateKey,
    /// In the user and process tokens.
    pub k1024a: RsaPrivateKey,
    /// In the session token, and revoked in the process token.
    pub k1024b: RsaPrivateKey,
    /// What templates are made of: the three above and two keys in no
    /// token (`import`, `import2`), in the order of `wellformed::KeyName`.
    pub known: Vec<Known>,
    /// What `C_GenerateKeyPair` returns, by size and exponent.
    pub pool: Vec<RsaPrivateKey>,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = |name: &str| {
            let (_, e, p, q) = PRIMES
                .iter()
                .find(|k| k.0 == name)
                .expect("a key of that name");
            let n = |hex: &str| BigUint::parse_bytes(hex.as_bytes(), 16).expect("hex");
            RsaPrivateKey::from_p_q(n(p), n(q), BigUint::from(*e)).expect("a valid key")
        };
        let known = ["import", "import2", "k1024a", "k1024b", "k2048"]
            .into_iter()
            .map(|name| {
                let key = key(name);
                Known {
                    pkcs8: key.to_pkcs8_der().expect("PKCS#8").as_bytes().to_vec(),
                    cert: certificate(name, &key),
                    key,
                }
            })
            .collect();
        Keys {
            k2048: key("k2048"),
            k1024a: key("k1024a"),
            k1024b: key("k1024b"),
            known,
            pool: ["gen2048a", "gen2048b", "gen2048e3", "gen3072", "gen4096"]
                .into_iter()
                .map(key)
                .collect(),
        }
    })
}

/// A self-signed certificate, the same every time (fixed validity, and
/// PKCS#1 v1.5 signatures are deterministic).
fn certificate(name: &str, key: &RsaPrivateKey) -> Vec<u8> {
    let signer = SigningKey::<Sha256>::new(key.clone());
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key()).expect("an SPKI");
    let subject: Name = format!("CN={name},O=keyring-pkcs11 fuzzer")
        .parse()
        .expect("a name");
    let at = |secs| {
        Time::UtcTime(
            x509_cert::der::asn1::UtcTime::from_unix_duration(std::time::Duration::from_secs(secs))
                .expect("a time"),
        )
    };
    let validity = Validity {
        not_before: at(1_700_000_000),
        not_after: at(2_000_000_000),
    };
    let serial = SerialNumber::from(name.len() as u32);
    let builder = CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)
        .expect("a certificate builder");
    builder
        .build::<rsa::pkcs1v15::Signature>()
        .expect("a certificate")
        .to_der()
        .expect("DER")
}

/// Which pool key the next generation of this input returns: a fresh key
/// each time, as far as the pool goes, and the same ones for every run of
/// an input.
static NEXT_GENERATED: AtomicUsize = AtomicUsize::new(0);

pub fn reset_pool() {
    NEXT_GENERATED.store(0, Ordering::Relaxed);
}

/// The mock build's key generator (see `store::mock::install_generator`):
/// the next pool key of the size and exponent asked for; none for an
/// exponent the pool lacks.
pub fn generate(bits: u32, exponent: u64) -> Option<RsaPrivateKey> {
    use rsa::traits::PublicKeyParts;
    let fits: Vec<&RsaPrivateKey> = keys()
        .pool
        .iter()
        .filter(|k| k.n().bits() == bits as usize && k.e() == &BigUint::from(exponent))
        .collect();
    if fits.is_empty() {
        return None;
    }
    let i = NEXT_GENERATED.fetch_add(1, Ordering::Relaxed);
    Some(fits[i % fits.len()].clone())
}

/// (name, public exponent, p, q), made once with `openssl genpkey`; test-only.
pub const PRIMES: &[(&str, u32, &str, &str)] = &[
    (
        "k2048",
        65537,
        "f1f5a608c8b56b50324e20ac32ccb9dc11c8774c946e3a9e0563dfe670d754aa6cb680d73c47524cd2bae4f763843ab4f3bb0e202b30ffc2ab6032f930dc2b93a78f0ddec30ed15d078701ea70260d085d24a662136d4526749292e0e1ab4e7a74030418fc9b20aaa608672cbfee752f296260118e47f55c3d0b8080782576cf",
        "f105ca64f1c1f85daef013ab8430bdd1c108ea7807ceb2498183f2172d14bb946df67174f4472a23fe0624653ca8efba15925adac6272f9b3830e395211eac2a21d775032481a41e1482ac2dfe8f6d37ef4f3aa7c453d5b2864564efcfa8584da97b6a1a33cb597ef520aefcb3308064e16695eac843c43e910552ace8aa5d9d",
    ),
    (
        "k1024a",
        65537,
        "f902306f5237db9e82b5b6f8c89e9105f352fc97a5c04501b2ab6a859c50dba0c9620a0d5b15b94c174918ae9b73a914a5b2a75e50d1af93c530f783424a8455",
        "d1dd03342db91a1741ace26dbb040089c48268b34d1a5c14fa7f6d702630b7813dc3d37fe974226ceca3bd98c83ba0cb4bfb9de9c5a019d03d354eed1a5c6bbb",
    ),
    (
        "k1024b",
        65537,
        "d52ea4b77013a0b8192a4072d4b1c71ff6615e78a44b7f57ca240be2cca9fc3f6a755291404ae3201a7408fd13a254a3cbd21442a5fdc1bd08579cb177217603",
        "c61fc33b9a2d7dbb63042cbebad6683e69781ca60e6dfc180d4d0091dedc719cbcc5a9f56b6abfc90163070534307e0f21e9e87a73aa688f82c6bed836d4c8fd",
    ),
    (
        "import",
        65537,
        "fdd8ac8e5fb52ee6cd0505423c7cf3e53bc790263b1766e874225bd23192b6cfdd638583abeeb5b8746ed771f1fedb0fcb0ee287521e795302a06a212f232a77",
        "f5febb3958d2ffdf37d63b0aa437e44c3d8f4f366c002cbf519928a1579d15d37a37029364d2d1496a017175d63aab5d4a482a69c9aa6e29601729f4494c4bc9",
    ),
    (
        "import2",
        65537,
        "e1c85b5d2ae914db408ed527dcb77bac2fb5f76a499b37d77d139510933dffb096fee888d19775b12577707a17393e8adf427f29e7b1283ec56a22631930ca0d",
        "d23767de39b76bb31fc81a1f629ded24b26e9e76ac3cab6aeaedfde119649afcc476f59863a433d0edda492a8e543be843e4e3a078af8d73f03e94b7090ca921",
    ),
    (
        "gen2048a",
        65537,
        "d664a86b604e25759a5b891bc1e3ddbc34b9a0225b30c5069c485332c16e7fb6dada05098c876f1c166fbb5e9e131a5d498a5b8da7246ecca474b33d3a866b3c1f9e092783f28ec1aba3c805a0f6739973689426e58f497e246561af3593459814b03f63157882893d02de3af0f3bd04dc95d516ef53fcb11e5c7d92c81be4f3",
        "c03514cecd00972c14de049b7d78229f4e53f97d8351e267a578898abe155643ca2ea698794d70ba1e97ca3a10d8bf4503f6e0036cb6cdc171be92e5d7cfcc2148b9db7ec69c9782fc4f8f8b1a26334f6c0d7fb21044ae3208e11d4a832cc49171d65607f9ca3ec64b918e1fa5da2b02871fe6b800864d52cc9245aafaa40043",
    ),
    (
        "gen2048b",
        65537,
        "cb7490407102c8549372e3ad2d0d4c886116077952051b20b2e86741cd40ea024d347070efd70a745286c23ef91628f898152913d5a44142195450c71c028081a588dede987153472908ccb8f0fab419360820e2778bd4b6af34dc6da5f22210cefc3423e09926b2fabe456f99359278468eadb9458a65ea45844dde8846171d",
        "c55f70cac197083f6f621254977d1286c302b8f704ff18d2c58b34e7c2dd667b11b18274ab4edcf18aea421574559592f8040688b243bf05bd6bbd8ad257a163257d94d2dbdb4f6230b4066225d61f5a72faee0bea1c7f66fe47d2c8c431c1b9e34f3fa5e6026789d021da64df5d6c065b9abf625726e5759dcfc1dc32a31ccf",
    ),
    (
        "gen2048e3",
        3,
        "df7e19f9a7984f1c74c71b6a222218b74d9c99544f9063f86b23143ca496ec200843fb4aa3d119f28da7edb58f059e080fafae99f4d87d84733e5d0a7866a38616dcc3f343510d48e34f480ad765096153a863661af374366986c4ecf0893af1d9e52bfb2ac0710e62fe40b336895290cc0b93fdc2392c85d8ac88265fd73923",
        "da75c813837bab62a989cbdb7e80ccf23d155a0fbb191ea5c8af4bc66809de816f8e5a5d0681cf33f11696ccfe6b30cf2f9cad63b1d145a2347f80e288b796f1ee8e82254985a6635931b2f587d78426092d91094e919a8a531902e11849752606af4c180d01923e5f4bffc74b09d593447db9765116c683ffa71c86ad7e20b7",
    ),
    (
        "gen3072",
        65537,
        "edd309cfd57b14a73513011686ba80261741f36e81eeb10989a277a86a63755110754386822263a15fdf9f63ffccca0ba3060f469d1344cbbb4aada179cb44f567efd44586f541061f5876e9d0cf439e8e3e63136246f32b29324e9721baf252fbf9f81b77cf3a2f23455f17b731ea1a7ba930535b5379b30ed3fcc1452ccb0c8ab14a8c48f197a9dac9a13efcc3f17f657246c9210b68bc114b0fe0f6fd282b53b3ccb3412ab98da595e5a81739cb20f6468bc06ef68ce0e7fd9fb56e25c14b",
        "dda941b55f538962062c3dc53bf6e38f13b3f9088c2f541a2d111257a2e75a31f8b2f406f4c39d4989c6f671d4055751fce2da2ca4a58d86576dd9014b1d85c36f349748f4a34524c157b9029dc29a2bc297fe486270989fd06b2c533fadad25de789d3e50dfdc4b09b32149c552a026455448c382445c20b916927a462eb714aeca30080132898a66bb9eb6c12a5b1c7ffec5d30799bbc5a1d0950008a4e76a1da13a390cdda167db3ef3e85214abb2d2989438222a2a563827d0d0eb2a36e7",
    ),
    (
        "gen4096",
        65537,
        "feccabff81bd7d2f9745d9a1b100db38d099a61c2505959d5065f39d1cc4853206dbdd0e44c34947cd520549f543798ad180b5e7609fabbe812a5692446b640ce6e3c3bcc6a3974c8bcb36667a0ed47b57468f0a31d497d9b1001cbda70cfccb7c71e1060f5c0f89d0286f7d2e43316f2c536a5ed27d4fa05ecedf6c872c684cf4c1da8453d520e84000841fe8073008e9327416c54694ef8bf64598124562ec49df3c1c9056d300c49de0ea2bc870b3188799b360cac7e5944e9759a6b82af0e11670d4e31ac4ac94efe590b0a9ca88d3ecb80c165fc5ef1043a9161d1c3419c3ecc9d388d661be16438bd552576ac6770b2ff1072b66bc0b6e569c2d5e909f",
        "e41e262957bacd6e33b587723c71c63259932f4fb6a921b23b02ef9b40577aa5e1a55c0e75141871f6f61f73180088d4416e39876e3d019fe3cdb1f46f4f8ad790d0f0880376e0e993ec1c0d671332346eb60d40103951e8c283dc54f947cbca576b41c7e140932fc8f32d5469078e6c9e55320213ead83bee47ea922da845fb4fdce13c6b5ea1e092481555d883aae221c9df3fdc5193d7c9c8fb16a8058e2fd5cf7e88ed5a0f711eeea4cad3f974282adc0e27f87c9b7b5bc622fd678f87a45e1e0841428c62050da42d75613dc2655d6860b0a1113ce756f43cb1618d81cc9de2b0ecac986ddae5bf7ab6f971928bd05e0d21d108fec27d9ddbbf240c77fb",
    ),
];
