//! Logic tests against the in-memory store. The same behaviour is tested
//! against real kernels in `tests/` (run inside the lab).

pub(super) use super::*;
pub(super) use crate::crypto::pubkey::RsaPublic;
pub(super) use crate::kernel::keyctl::Serial;
pub(super) use crate::kernel::mock::MockStore;
pub(super) use crate::kernel::store::TokenKind;
pub(super) use crate::mechanism::MechParams;
pub(super) use crate::object::AttrValue;
pub(super) use rsa::traits::PublicKeyParts;
pub(super) use rsa::{Pkcs1v15Sign, RsaPrivateKey};
pub(super) use sha2::Digest;

mod digest;
mod discovery;
mod objects;
mod operations;
mod provisioning;
mod sessions;
mod templates;
mod tokens;

pub(super) fn rsa_key(bits: usize) -> RsaPrivateKey {
    RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap()
}

pub(super) struct Fixture {
    pub(super) store: Arc<MockStore>,
    pub(super) m: Module,
    pub(super) key: RsaPrivateKey,
    pub(super) serial: Serial,
}

pub(super) fn fixture(named: &[&str]) -> Fixture {
    let store = Arc::new(MockStore::default());
    store.add_keyring(&TokenKind::Session);
    store.add_keyring(&TokenKind::User);
    store.add_keyring(&TokenKind::Process);
    let key = rsa_key(1024);
    let serial = store.add_key(&TokenKind::User, "asymmetric", "mykey", Some(key.clone()));
    store.add_key(&TokenKind::User, "user", "a password", None);
    let cfg = Config {
        named_keyrings: named.iter().map(|s| s.to_string()).collect(),
        ..Config::default()
    };
    let m = Module::new(store.clone(), &cfg);
    Fixture {
        store,
        m,
        key,
        serial,
    }
}

pub(super) const USER: CK_SLOT_ID = 1;

pub(super) fn class(c: CK_OBJECT_CLASS) -> (CK_ATTRIBUTE_TYPE, Vec<u8>) {
    (CKA_CLASS, c.to_ne_bytes().to_vec())
}

pub(super) fn find(
    m: &Module,
    h: CK_SESSION_HANDLE,
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Vec<CK_OBJECT_HANDLE> {
    m.find_init(h, t).unwrap();
    let mut all = Vec::new();
    loop {
        let got = m.find_next(h, 1).unwrap();
        if got.is_empty() {
            break;
        }
        all.extend(got);
    }
    m.find_final(h).unwrap();
    all
}

pub(super) fn value(v: &AttrValue) -> &[u8] {
    match v {
        AttrValue::Value(v) => v,
        other => panic!("expected a value, got {other:?}"),
    }
}

pub(super) fn private_handle(f: &Fixture, h: CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE {
    find(&f.m, h, &[class(CKO_PRIVATE_KEY)])[0]
}
