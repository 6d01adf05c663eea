//! What a keyring holds: metadata records and their keys.

use super::*;

#[test]
fn metadata_records_apply_to_their_key_only_and_bad_ones_are_ignored() {
    let f = fixture(&[]);
    // A record whose name is not a hex key ID (written by hand, or by a
    // future version) must neither become an object nor stop the scan.
    f.store
        .add_key(&TokenKind::User, "user", "keyring-pkcs11:not-hex!", None);
    let other = rsa_key(1024);
    f.store
        .add_key(&TokenKind::User, "asymmetric", "other", Some(other.clone()));
    let h =
        f.m.open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .unwrap();
    assert_eq!(find(&f.m, h, &[]).len(), 4, "two keys, two objects each");
    let mine = find(
        &f.m,
        h,
        &[class(CKO_PRIVATE_KEY), (CKA_LABEL, b"mykey".to_vec())],
    );
    assert_eq!(mine.len(), 1);
    f.m.set_attributes(h, mine[0], &[(CKA_ID, &[9][..])])
        .unwrap();
    // Another process (a fresh module on the same keyring) sees the new ID on
    // that key and the derived ID on the other.
    let m2 = Module::new(f.store.clone(), &Config::default());
    let h2 = m2.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    assert_eq!(find(&m2, h2, &[(CKA_ID, vec![9])]).len(), 2);
    let derived = RsaPublic {
        modulus: other.n().to_bytes_be(),
        exponent: other.e().to_bytes_be(),
    }
    .key_id();
    let theirs = find(&m2, h2, &[(CKA_ID, derived)]);
    assert_eq!(theirs.len(), 2);
    assert_eq!(find(&m2, h2, &[]).len(), 4);
    // Back to the derived ID: the record keeps no ID, and both modules follow.
    let derived_mine = RsaPublic {
        modulus: f.key.n().to_bytes_be(),
        exponent: f.key.e().to_bytes_be(),
    }
    .key_id();
    f.m.set_attributes(h, mine[0], &[(CKA_ID, &derived_mine[..])])
        .unwrap();
    assert!(
        f.store
            .user_payloads()
            .iter()
            .all(|(_, p)| !String::from_utf8_lossy(p).contains("\nid="))
    );
    assert!(find(&m2, h2, &[(CKA_ID, vec![9])]).is_empty());
    assert_eq!(find(&m2, h2, &[(CKA_ID, derived_mine)]).len(), 2);
}

/// Keys of 512 bits: recovery and checks cost the same kind of calls, and
/// a token of dozens is made in a blink.
fn many_keys(f: &Fixture, n: usize) {
    for i in 0..n {
        f.store.add_key(
            &TokenKind::User,
            "asymmetric",
            &format!("k{i}"),
            Some(rsa_key(512)),
        );
    }
}

#[test]
fn a_search_by_label_looks_at_one_key_only() {
    let f = fixture(&[]);
    many_keys(&f, 40);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let (d0, p0) = (*f.store.describes.lock(), *f.store.publics.lock());
    let found = find(
        &f.m,
        h,
        &[class(CKO_PRIVATE_KEY), (CKA_LABEL, b"k17".to_vec())],
    );
    assert_eq!(found.len(), 1);
    let (d1, p1) = (*f.store.describes.lock(), *f.store.publics.lock());
    assert!(d1 - d0 <= 2, "{} describes for one key", d1 - d0);
    // The key a search names is learned then (a key whose public key
    // cannot be learned is not found): that key's recovery alone.
    assert!(p1 - p0 < 12, "one key's recovery ({})", p1 - p0);
    let a = f.m.attributes(h, found[0], &[CKA_MODULUS]).unwrap();
    assert_eq!(value(&a[0]).len(), 64);
    assert_eq!(*f.store.publics.lock(), p1, "learned once");
    // A full listing learns each key once; an unchanged keyring is not
    // asked about again.
    assert_eq!(find(&f.m, h, &[class(CKO_PRIVATE_KEY)]).len(), 41);
    let d2 = *f.store.describes.lock();
    assert_eq!(find(&f.m, h, &[class(CKO_PRIVATE_KEY)]).len(), 41);
    assert_eq!(
        *f.store.describes.lock(),
        d2,
        "an unchanged keyring: no describe"
    );
    // A key added by another process shows at the next search.
    f.store
        .add_key(&TokenKind::User, "asymmetric", "late", Some(rsa_key(512)));
    assert_eq!(find(&f.m, h, &[class(CKO_PRIVATE_KEY)]).len(), 42);
    assert_eq!(
        *f.store.describes.lock(),
        d2 + 1,
        "only the new key is described"
    );
}

#[test]
fn a_search_by_label_reads_the_links_again_only_for_a_new_key_or_a_keyring_of_another_size() {
    let f = fixture(&[]);
    many_keys(&f, 40);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let by_label = |l: &str| {
        find(
            &f.m,
            h,
            &[class(CKO_PRIVATE_KEY), (CKA_LABEL, l.as_bytes().to_vec())],
        )
    };
    let modulus = |o| value(&f.m.attributes(h, o, &[CKA_MODULUS]).unwrap()[0]).to_vec();
    let serial = |l: &str| linked_serial(&f, l);
    let reads = || *f.store.link_reads.lock();
    let r0 = reads();
    assert_eq!(by_label("k7").len(), 1);
    assert_eq!(reads() - r0, 1, "the first search reads the links once");
    let r1 = reads();
    let before = modulus(by_label("k7")[0]);
    assert_eq!(by_label("k8").len(), 1);
    assert_eq!(reads(), r1, "an unchanged keyring: its links are not read");
    // Another process replaces k7 (a new key, the same label, as many
    // links): the search finds a key the links last read do not hold.
    f.store.unlink(serial("k7"));
    f.store
        .add_key(&TokenKind::User, "asymmetric", "k7", Some(rsa_key(512)));
    let found = by_label("k7");
    assert_eq!(found.len(), 1);
    assert_ne!(modulus(found[0]), before, "the new key, not the old one");
    assert_eq!(reads(), r1 + 1, "a key not seen linked: the links are read");
    // Another process removes k8: the search does not find it.
    f.store.unlink(serial("k8"));
    assert!(by_label("k8").is_empty());
    assert_eq!(reads(), r1 + 1);
    // The keyring now holds fewer links than last read: read again.
    assert_eq!(by_label("k9").len(), 1);
    assert_eq!(reads(), r1 + 2, "another number of links: read again");
    assert_eq!(by_label("k9").len(), 1);
    assert_eq!(reads(), r1 + 2);
}

#[test]
fn a_created_keys_record_caches_its_public_key_checked_against_the_kernel() {
    let f = fixture(&[]);
    let h =
        f.m.open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .unwrap();
    let bits = (2048 as CK_ULONG).to_ne_bytes();
    let pubt: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![(CKA_MODULUS_BITS, &bits)];
    let privt: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![(CKA_TOKEN, &[1]), (CKA_LABEL, b"cached")];
    let (pu, _) =
        f.m.generate_key_pair(
            h,
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            &MechParams::None,
            &pubt,
            &privt,
        )
        .unwrap();
    let modulus = f.m.attributes(h, pu, &[CKA_MODULUS]).unwrap().remove(0);
    let id =
        f.m.attributes(h, pu, &[CKA_ID])
            .unwrap()
            .remove(0)
            .into_value();
    // Another process listing the token (as ssh and p11tool do) takes it
    // from the record, with one public operation instead of a recovery...
    let public_ops = |m: &Module, template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]| {
        let h = m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
        let before = *f.store.publics.lock();
        let k = find(m, h, template);
        assert_eq!(k.len(), 1);
        let got = m.attributes(h, k[0], &[CKA_MODULUS]).unwrap().remove(0);
        (got, *f.store.publics.lock() - before)
    };
    let m2 = Module::new(f.store.clone(), &Config::default());
    let (got, listing) = public_ops(&m2, &[class(CKO_PUBLIC_KEY), (CKA_ID, id)]);
    assert_eq!(got, modulus);
    // ...while the fixture's key, loaded without a record, is recovered.
    let m3 = Module::new(f.store.clone(), &Config::default());
    let (_, recovery) = public_ops(
        &m3,
        &[class(CKO_PUBLIC_KEY), (CKA_LABEL, b"mykey".to_vec())],
    );
    assert!(
        recovery >= 4,
        "a recovery takes several operations ({recovery})"
    );
    // The listing needed both keys' public keys: one check plus one recovery.
    assert_eq!(listing, 1 + recovery, "the cached key cost one check");
}

#[test]
fn keys_listed_by_class_then_read_by_handle_take_their_public_key_from_their_record() {
    // What ssh -I, ssh-keygen -D and p11tool do: list the public keys by
    // class alone (no public key needed), then read CKA_MODULUS of each
    // through its handle. A key whose record caches its public key costs one
    // check there, as it does in a search; only a key without one is
    // recovered.
    let f = fixture(&[]);
    let h =
        f.m.open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .unwrap();
    let bits = (2048 as CK_ULONG).to_ne_bytes();
    let pubt: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![(CKA_MODULUS_BITS, &bits)];
    let privt: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![(CKA_TOKEN, &[1]), (CKA_LABEL, b"cached")];
    f.m.generate_key_pair(
        h,
        CKM_RSA_PKCS_KEY_PAIR_GEN,
        &MechParams::None,
        &pubt,
        &privt,
    )
    .unwrap();
    let read_all = |m: &Module| {
        let h = m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
        let before = *f.store.publics.lock();
        let keys = find(m, h, &[class(CKO_PUBLIC_KEY)]);
        assert_eq!(keys.len(), 2);
        assert_eq!(
            *f.store.publics.lock(),
            before,
            "a listing by class needs no public key"
        );
        for k in keys {
            m.attributes(h, k, &[CKA_LABEL, CKA_MODULUS]).unwrap();
        }
        *f.store.publics.lock() - before
    };
    let m2 = Module::new(f.store.clone(), &Config::default());
    let all = read_all(&m2);
    // The fixture's key, loaded without a record, alone.
    let m3 = Module::new(f.store.clone(), &Config::default());
    let h3 = m3.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let before = *f.store.publics.lock();
    let k = find(
        &m3,
        h3,
        &[class(CKO_PUBLIC_KEY), (CKA_LABEL, b"mykey".to_vec())],
    );
    m3.attributes(h3, k[0], &[CKA_MODULUS]).unwrap();
    let recovery = *f.store.publics.lock() - before;
    assert!(
        recovery >= 4,
        "a recovery takes several operations ({recovery})"
    );
    assert_eq!(all, 1 + recovery, "the key with a record cost one check");
}

/// Keys of the token whose public key this module has learned.
fn learned(m: &Module) -> usize {
    m.keys
        .lock()
        .values()
        .filter(|k| matches!(k, Known::Key(k) if k.public_key().is_some()))
        .count()
}

/// A fresh module over the fixture's store that uses `threads` threads, a
/// session of it, and that session's handles of every key object of `c`.
fn listing(
    f: &Fixture,
    threads: usize,
    c: CK_OBJECT_CLASS,
) -> (Module, CK_SESSION_HANDLE, Vec<CK_OBJECT_HANDLE>) {
    let m = Module::new(
        f.store.clone(),
        &Config {
            threads: Some(threads),
            ..Config::default()
        },
    );
    let h = m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let keys = find(&m, h, &[class(c)]);
    (m, h, keys)
}

#[test]
fn reading_a_listed_key_learns_the_keys_after_it_on_every_thread() {
    // A listing read key by key (ssh -I, p11tool) learns the next keys with
    // the one read, in a window that doubles: no key is learned twice and
    // none is learned by a module told to use one thread.
    let f = fixture(&[]);
    for i in 0..5 {
        f.store.add_key(
            &TokenKind::User,
            "asymmetric",
            &format!("more{i}"),
            Some(rsa_key(1024)),
        );
    }
    let run = |threads: usize| {
        let (m, h, keys) = listing(&f, threads, CKO_PUBLIC_KEY);
        assert_eq!(keys.len(), 6);
        let before = *f.store.publics.lock();
        let mut seen = Vec::new();
        for k in &keys {
            m.attributes(h, *k, &[CKA_MODULUS]).unwrap();
            seen.push(learned(&m));
        }
        (seen, *f.store.publics.lock() - before)
    };
    let (one, work_one) = run(1);
    assert_eq!(one, [1, 2, 3, 4, 5, 6]);
    let (two, work_two) = run(2);
    // The first read learns one key per thread; the third, four.
    assert_eq!(two, [2, 2, 6, 6, 6, 6]);
    assert_eq!(work_one, work_two, "the same public operations in all");
}

#[test]
fn a_key_that_cannot_be_learned_is_not_tried_by_every_read_ahead() {
    // Keys whose public operation is refused while they stay linked: each
    // read fails, and a read ahead that passes a key tries it at most once
    // (its own read tries it once more). Seen failing before the fix: 802
    // public operations with 8 threads where one thread made 46.
    let f = fixture(&[]);
    let bad: Vec<Serial> = (0..40)
        .map(|i| {
            f.store.add_key(
                &TokenKind::User,
                "asymmetric",
                &format!("bad{i:02}"),
                Some(rsa_key(512)),
            )
        })
        .collect();
    let run = |threads: usize| {
        let (m, h, keys) = listing(&f, threads, CKO_PUBLIC_KEY);
        for &s in &bad {
            f.store.set_gone(s, libc::EACCES);
        }
        let before = *f.store.publics.lock();
        let failed = keys
            .iter()
            .filter(|k| m.attributes(h, **k, &[CKA_MODULUS]).is_err())
            .count();
        for &s in &bad {
            f.store.keys.lock().get_mut(&s).unwrap().gone = None;
        }
        (failed, *f.store.publics.lock() - before)
    };
    let (failed_one, ops_one) = run(1);
    let (failed_eight, ops_eight) = run(8);
    assert_eq!((failed_one, failed_eight), (40, 40));
    assert!(
        ops_eight <= 2 * ops_one,
        "{ops_eight} public operations with 8 threads, {ops_one} with one"
    );
}

#[test]
fn a_first_look_at_many_keys_on_several_threads_lists_each_once() {
    // Enough serials that a first look shares them out (64 a thread).
    let f = fixture(&[]);
    let key = rsa_key(1024);
    for i in 0..300 {
        f.store.add_key(
            &TokenKind::User,
            "asymmetric",
            &format!("many{i:03}"),
            Some(key.clone()),
        );
        f.store
            .add_key(&TokenKind::User, "user", &format!("other{i}"), None);
    }
    let labels = |threads: usize| {
        let (m, h, keys) = listing(&f, threads, CKO_PRIVATE_KEY);
        let mut out: Vec<Vec<u8>> = keys
            .into_iter()
            .map(|k| value(&m.attributes(h, k, &[CKA_LABEL]).unwrap()[0]).to_vec())
            .collect();
        out.sort();
        out
    };
    let one = labels(1);
    assert_eq!(one.len(), 301);
    assert_eq!(labels(4), one);
}

#[test]
fn a_forged_public_key_in_a_record_is_not_believed() {
    let f = fixture(&[]);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let real = RsaPublic {
        modulus: f.key.n().to_bytes_be(),
        exponent: f.key.e().to_bytes_be(),
    };
    // A record named after the key's real ID, with its label, claiming
    // another modulus: planted by the key's owner (root here), so only the
    // check against the kernel can catch it.
    let forged = crate::object::KeyRecord {
        label: Some("mykey".into()),
        public: Some(RsaPublic {
            modulus: rsa_key(1024).n().to_bytes_be(),
            exponent: vec![1, 0, 1],
        }),
        ..Default::default()
    };
    let ring = f.store.resolve(&TokenKind::User).unwrap();
    f.store
        .add(
            ring,
            "user",
            &crate::records::meta_description(&real.key_id()),
            &crate::records::encode_key_record(&forged),
        )
        .unwrap();
    let k = find(
        &f.m,
        h,
        &[class(CKO_PRIVATE_KEY), (CKA_LABEL, b"mykey".to_vec())],
    );
    assert_eq!(
        value(&f.m.attributes(h, k[0], &[CKA_MODULUS]).unwrap()[0]),
        real.modulus
    );
    // A full listing, where the record is seen first, too.
    let m2 = Module::new(f.store.clone(), &Config::default());
    let h2 = m2.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let k = find(&m2, h2, &[class(CKO_PRIVATE_KEY), (CKA_ID, real.key_id())]);
    assert_eq!(k.len(), 1);
    assert_eq!(
        value(&m2.attributes(h2, k[0], &[CKA_MODULUS]).unwrap()[0]),
        real.modulus
    );
}

#[test]
fn searches_by_id_go_through_an_index_while_the_keyring_is_unchanged() {
    let f = fixture(&[]);
    many_keys(&f, 30);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let id = |label: &[u8]| {
        let k = find(
            &f.m,
            h,
            &[class(CKO_PRIVATE_KEY), (CKA_LABEL, label.to_vec())],
        );
        f.m.attributes(h, k[0], &[CKA_ID])
            .unwrap()
            .remove(0)
            .into_value()
    };
    let (a, b) = (id(b"k3"), id(b"k21"));
    // The first search by ID needs every key's ID; later ones do not.
    assert_eq!(find(&f.m, h, &[(CKA_ID, a.clone())]).len(), 2);
    let (d, p) = (*f.store.describes.lock(), *f.store.publics.lock());
    assert_eq!(find(&f.m, h, &[(CKA_ID, b)]).len(), 2);
    assert_eq!(
        find(&f.m, h, &[class(CKO_PUBLIC_KEY), (CKA_ID, a.clone())]).len(),
        1
    );
    assert_eq!((*f.store.describes.lock(), *f.store.publics.lock()), (d, p));
    // A changed keyring is a new index: the new key is found by its ID.
    let late = rsa_key(512);
    f.store
        .add_key(&TokenKind::User, "asymmetric", "late", Some(late.clone()));
    let late_id = RsaPublic {
        modulus: late.n().to_bytes_be(),
        exponent: late.e().to_bytes_be(),
    }
    .key_id();
    assert_eq!(find(&f.m, h, &[(CKA_ID, late_id)]).len(), 2);
    assert_eq!(find(&f.m, h, &[(CKA_ID, a)]).len(), 2);
}

/// A token of `n` small keys seen by two processes (two modules on one
/// store): this one's read-only session and the other's read-write one.
fn two_processes(n: usize) -> (Fixture, CK_SESSION_HANDLE, Module, CK_SESSION_HANDLE) {
    let f = fixture(&[]);
    many_keys(&f, n);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let m2 = Module::new(f.store.clone(), &Config::default());
    let h2 = m2
        .open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .unwrap();
    (f, h, m2, h2)
}

/// The serial of the key labelled `l` that is linked in some keyring of
/// the store (a replaced key keeps its entry, unlinked).
fn linked_serial(f: &Fixture, l: &str) -> Serial {
    f.store
        .keys
        .lock()
        .iter()
        .find(|(s, k)| k.desc.description == l && f.store.all_links().contains(s))
        .map(|(s, _)| *s)
        .unwrap()
}

fn private_by_label(m: &Module, h: CK_SESSION_HANDLE, l: &str) -> Vec<CK_OBJECT_HANDLE> {
    find(
        m,
        h,
        &[class(CKO_PRIVATE_KEY), (CKA_LABEL, l.as_bytes().to_vec())],
    )
}

#[test]
fn a_search_of_keys_by_id_checks_the_keys_it_found_last_instead_of_reading_every_link() {
    let (f, h, m2, h2) = two_processes(30);
    let by_label = private_by_label;
    let id_of = |l: &str| {
        f.m.attributes(h, by_label(&f.m, h, l)[0], &[CKA_ID])
            .unwrap()
            .remove(0)
            .into_value()
    };
    let by_id = |id: &[u8]| find(&f.m, h, &[class(CKO_PRIVATE_KEY), (CKA_ID, id.to_vec())]);
    let label_of = |o| value(&f.m.attributes(h, o, &[CKA_LABEL]).unwrap()[0]).to_vec();
    let serial = |l: &str| linked_serial(&f, l);
    let reads = || *f.store.link_reads.lock();
    let (a, b) = (id_of("k3"), id_of("k21"));
    assert_eq!(by_id(&a).len(), 1);
    let r0 = reads();
    assert_eq!(by_id(&b).len(), 1);
    assert_eq!(by_id(&a).len(), 1);
    assert_eq!(reads(), r0, "an unchanged keyring: no link read");

    // Another process gives k5 the ID of k3: a record more, another size.
    let k5 = by_label(&m2, h2, "k5")[0];
    m2.set_attributes(h2, k5, &[(CKA_ID, &a[..])]).unwrap();
    let both = by_id(&a);
    assert_eq!(both.len(), 2);
    let mut labels: Vec<_> = both.iter().map(|&o| label_of(o)).collect();
    labels.sort();
    assert_eq!(labels, [b"k3".to_vec(), b"k5".to_vec()]);
    let r1 = reads();
    assert_eq!(by_id(&a).len(), 2);
    assert_eq!(reads(), r1);

    // Then another ID for k5: its record is replaced, as many links.
    m2.set_attributes(h2, k5, &[(CKA_ID, &[7][..])]).unwrap();
    let one = by_id(&a);
    assert_eq!(one.len(), 1, "k5 no longer has k3's ID");
    assert_eq!(label_of(one[0]), b"k3");
    assert_eq!(by_id(&[7]).len(), 1);

    // k3 replaced by another key of the same label, as many links.
    let r2 = reads();
    f.store.unlink(serial("k3"));
    f.store
        .add_key(&TokenKind::User, "asymmetric", "k3", Some(rsa_key(512)));
    assert!(by_id(&a).is_empty(), "the key with that ID is gone");
    assert_eq!(reads(), r2 + 1, "a key found last is not the label's now");

    // k21 unlinked and another key linked, as many links: gone.
    f.store.unlink(serial("k21"));
    f.store
        .add_key(&TokenKind::User, "asymmetric", "new", Some(rsa_key(512)));
    assert!(by_id(&b).is_empty());
    // An ID no key had at the last look: the links are read.
    let r3 = reads();
    assert!(by_id(&[1, 2, 3]).is_empty());
    assert_eq!(reads(), r3 + 1);
}

#[test]
fn a_key_whose_record_is_replaced_to_share_a_found_keys_id_shows_within_the_trusted_time() {
    let (f, h, m2, h2) = two_processes(10);
    let k = |m: &Module, h, l: &str| private_by_label(m, h, l)[0];
    let a =
        f.m.attributes(h, k(&f.m, h, "k3"), &[CKA_ID])
            .unwrap()
            .remove(0)
            .into_value();
    // k5 has a record already (another ID), so giving it k3's ID replaces
    // that record: as many links as before.
    let k5 = k(&m2, h2, "k5");
    m2.set_attributes(h2, k5, &[(CKA_ID, &[5][..])]).unwrap();
    let by_id = || find(&f.m, h, &[class(CKO_PRIVATE_KEY), (CKA_ID, a.clone())]);
    assert_eq!(by_id().len(), 1);
    let links = f.store.all_links().len();
    m2.set_attributes(h2, k5, &[(CKA_ID, &a[..])]).unwrap();
    assert_eq!(f.store.all_links().len(), links, "a record replaced");
    // What the check of k3 cannot see (README, Objects) ...
    assert_eq!(by_id().len(), 1);
    // ... a look older than the trusted time no longer answers.
    std::thread::sleep(
        super::super::discovery::ID_LOOK_TRUSTED + std::time::Duration::from_millis(100),
    );
    assert_eq!(by_id().len(), 2, "k5 found by its new ID");
}

#[test]
fn a_planted_record_before_the_modules_own_does_not_cost_a_recovery() {
    // Keyring order is not creation order: a record planted with the key's
    // label, named after and caching another key (consistent, so only the
    // kernel check can tell), may come first. It fails that check; the
    // key's own record is used next, and no recovery is needed.
    let f = fixture(&[]);
    let other = rsa_key(2048);
    let planted = crate::object::KeyRecord {
        label: Some("cached".into()),
        public: Some(RsaPublic {
            modulus: other.n().to_bytes_be(),
            exponent: other.e().to_bytes_be(),
        }),
        ..Default::default()
    };
    let other_id = planted.public.as_ref().unwrap().key_id();
    let ring = f.store.resolve(&TokenKind::User).unwrap();
    f.store
        .add(
            ring,
            "user",
            &crate::records::meta_description(&other_id),
            &crate::records::encode_key_record(&planted),
        )
        .unwrap();
    let h =
        f.m.open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .unwrap();
    let bits = (2048 as CK_ULONG).to_ne_bytes();
    let pubt: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![(CKA_MODULUS_BITS, &bits)];
    let privt: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![(CKA_TOKEN, &[1]), (CKA_LABEL, b"cached")];
    let (pu, _) =
        f.m.generate_key_pair(
            h,
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            &MechParams::None,
            &pubt,
            &privt,
        )
        .unwrap();
    let modulus = f.m.attributes(h, pu, &[CKA_MODULUS]).unwrap().remove(0);
    let m2 = Module::new(f.store.clone(), &Config::default());
    let h2 = m2.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let keys = find(&m2, h2, &[class(CKO_PUBLIC_KEY)]);
    let before = *f.store.publics.lock();
    let mut got = None;
    for k in keys {
        let a = m2.attributes(h2, k, &[CKA_LABEL, CKA_MODULUS]).unwrap();
        if value(&a[0]) == b"cached" {
            got = Some(a[1].clone());
        }
    }
    assert_eq!(got, Some(modulus), "the key's own public key");
    let ops = *f.store.publics.lock() - before;
    // Two checks (the planted record's, failed, and the key's own) and the
    // fixture key's recovery: a recovery of "cached" would add several more.
    let m3 = Module::new(f.store.clone(), &Config::default());
    let h3 = m3.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let before = *f.store.publics.lock();
    let k = find(
        &m3,
        h3,
        &[class(CKO_PUBLIC_KEY), (CKA_LABEL, b"mykey".to_vec())],
    );
    m3.attributes(h3, k[0], &[CKA_MODULUS]).unwrap();
    let recovery = *f.store.publics.lock() - before;
    assert!(recovery >= 4, "a recovery takes several operations");
    assert_eq!(ops, 2 + recovery, "two checks, no second recovery");
}
