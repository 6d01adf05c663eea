//! Measures how verification should be done: the kernel's `KEYCTL_PKEY_VERIFY`
//! (PKCS#1 v1.5 only), the module's path (x^e mod n by square-and-multiply in
//! userspace plus padding checks, which serves every padding), or x^e mod n
//! in userspace: the `rsa` crate's verification, `num-bigint-dig`'s modpow
//! (what that crate uses) and `num-bigint` with square-and-multiply.
//! Run where the kernel holds PKCS#8 keys, e.g. in the lab:
//!   cargo build --release --examples
//!   lab/run -- target/release/examples/public_ops target/lab-keys/rsa2048.pk8.der
//! Prints operations per second for both and their ratio (one run, one machine).

use keyring_pkcs11::keyctl;
use keyring_pkcs11::mechanism::{self, MechParams};
use keyring_pkcs11::object::KeyInfo;
use keyring_pkcs11::pubkey::RsaPublic;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use sha2::Digest;
use std::time::{Duration, Instant};

fn rate(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: public_ops KEY.pk8.der");
    let der = std::fs::read(&path).expect("read key");
    let sk = rsa::RsaPrivateKey::from_pkcs8_der(&der).expect("PKCS#8 RSA key");
    let serial = keyctl::add_key(
        "asymmetric",
        "public-ops-bench",
        &der,
        keyctl::KEY_SPEC_USER_KEYRING,
    )
    .expect("add_key (pkcs8_key_parser?)");
    let k = sk.size();
    let public = RsaPublic {
        modulus: sk.n().to_bytes_be(),
        exponent: sk.e().to_bytes_be(),
    };
    let info = KeyInfo::new(serial, "bench".into(), public, k);
    let digest = sha2::Sha256::digest(b"benchmark").to_vec();
    let mut sig = vec![0u8; k];
    keyctl::pkey_sign(serial, "enc=pkcs1 hash=sha256", &digest, &mut sig).unwrap();
    let spec = mechanism::lookup(cryptoki_sys::CKM_SHA256_RSA_PKCS).unwrap();
    let m = mechanism::resolve(spec, &MechParams::None, info.bits).unwrap();

    let store = keyring_pkcs11::store::KernelStore;
    let kernel =
        rate(|| keyctl::pkey_verify(serial, "enc=pkcs1 hash=sha256", &digest, &sig).unwrap());
    let module = rate(|| keyring_pkcs11::crypto::verify(&store, &info, &m, &digest, &sig).unwrap());
    let s = rsa::BigUint::from_bytes_be(&sig);
    let user = rate(|| {
        std::hint::black_box(s.modpow(sk.e(), sk.n()));
    });
    // The `rsa` crate's whole PKCS#1 v1.5 verification (its public op is
    // num-bigint-dig's modpow), and num-bigint with plain square-and-multiply
    // (no Montgomery set-up, which dominates for a 17-bit exponent).
    let pk = sk.to_public_key();
    let scheme = || rsa::Pkcs1v15Sign::new::<sha2::Sha256>();
    pk.verify(scheme(), &digest, &sig)
        .expect("rsa crate verifies");
    let rsa_crate = rate(|| pk.verify(scheme(), &digest, &sig).unwrap());
    let (x, n) = (
        num_bigint::BigUint::from_bytes_be(&sig),
        num_bigint::BigUint::from_bytes_be(&sk.n().to_bytes_be()),
    );
    let e = 65537u32;
    let square_multiply = rate(|| {
        let mut r = num_bigint::BigUint::from(1u32);
        for i in (0..32 - e.leading_zeros()).rev() {
            r = (&r * &r) % &n;
            if e >> i & 1 == 1 {
                r = (&r * &x) % &n;
            }
        }
        std::hint::black_box(r);
    });
    let sign = rate(|| {
        keyctl::pkey_sign(serial, "enc=pkcs1 hash=sha256", &digest, &mut sig).unwrap();
    });
    println!(
        "RSA-{}: kernel PKEY_VERIFY {kernel:.0}/s; module C_Verify path {module:.0}/s ({:.2}x); rsa crate verify {rsa_crate:.0}/s ({:.2}x); num-bigint-dig modpow alone {user:.0}/s ({:.2}x); num-bigint square-and-multiply alone {square_multiply:.0}/s ({:.2}x); kernel sign {sign:.0}/s",
        info.bits,
        module / kernel,
        rsa_crate / kernel,
        user / kernel,
        square_multiply / kernel
    );
    let _ = keyctl::unlink(serial, keyctl::KEY_SPEC_USER_KEYRING);
}
