//! The object calls: creation, generation, destruction, attributes and
//! searches, with the token invariants of `checks` around each.

use crate::args::{OutLen, Rare, SessionRef, Target};
use crate::buffers::{Guarded, Words};
use crate::harness::{Harness, KeyPair};
use crate::keys::keys;
use crate::template::{Attr, OutTemplateSpec, Template, TemplateSpec};
use crate::wellformed;
use arbitrary::Arbitrary;
use cryptoki_sys::*;

/// A `C_CreateObject` template: well-formed (then mutated), or random.
#[derive(Arbitrary, Debug, Clone)]
pub enum CreateTemplate {
    Wellformed(wellformed::Create),
    Random(TemplateSpec),
}

/// A `C_SetAttributeValue` template.
#[derive(Arbitrary, Debug, Clone)]
pub enum SetTemplate {
    /// CKA_ID, which a key's metadata record keeps.
    Id(wellformed::Id),
    /// CKA_ID with attributes a client might add.
    IdAnd(wellformed::Id, Vec<wellformed::Extra>),
    Wellformed(wellformed::Create),
    Random(TemplateSpec),
}

impl SetTemplate {
    fn build(&self) -> (Vec<Attr>, Template) {
        let id = |id: &wellformed::Id| Attr::new(CKA_ID, id.value(&keys().known[0].key));
        let list = match self {
            SetTemplate::Id(i) => vec![id(i)],
            SetTemplate::IdAnd(i, extra) => std::iter::once(id(i))
                .chain(extra.iter().take(4).map(wellformed::extra))
                .collect(),
            SetTemplate::Wellformed(w) => w.build(),
            SetTemplate::Random(r) => r.attrs(),
        };
        let t = match self {
            SetTemplate::Random(r) => Template::input(&list).shaped(&r.shape),
            _ => Template::input(&list),
        };
        (list, t)
    }
}

impl Harness {
    pub fn create_object(&mut self, session: SessionRef, spec: &CreateTemplate, null_out: Rare) {
        let s = self.session(session);
        let list = match spec {
            CreateTemplate::Wellformed(w) => w.build(),
            CreateTemplate::Random(r) => r.attrs(),
        };
        let mut t = match spec {
            CreateTemplate::Wellformed(_) => Template::input(&list),
            CreateTemplate::Random(r) => Template::input(&list).shaped(&r.shape),
        };
        let mut o = Guarded::<CK_OBJECT_HANDLE>::new();
        let before = self.tokens();
        let p = t.ptr();
        let rv = call!(self, C_CreateObject(s, p, t.count, o.ptr(null_out.0)));
        t.check("C_CreateObject");
        o.check("C_CreateObject");
        self.check_unchanged("C_CreateObject", rv, &before);
        if rv != CKR_OK {
            return;
        }
        let o = o.value;
        self.learn(s, o);
        let got = self.class(s, o);
        // The class the template asked for (the module reads the first).
        let class = list[..t.used()]
            .iter()
            .find(|a| a.ty == CKA_CLASS)
            .and_then(|a| <[u8; 8]>::try_from(a.value.as_deref()?).ok())
            .map(CK_OBJECT_CLASS::from_ne_bytes);
        assert_eq!(got, class, "C_CreateObject: the class of the new object");
        if got == Some(CKO_PRIVATE_KEY) {
            self.private.push((s, o));
        }
        self.check_readback("C_CreateObject", s, o, &list[..t.used()]);
    }

    pub fn generate_key_pair(
        &mut self,
        session: SessionRef,
        spec: &wellformed::Generate,
        null_out: Rare,
    ) {
        let s = self.session(session);
        let mut m = match &spec.mechanism {
            crate::args::Mostly::Usual(()) => {
                crate::mechanism::Mech::new(CKM_RSA_PKCS_KEY_PAIR_GEN, Vec::new(), Vec::new())
            }
            crate::args::Mostly::Odd(m) => m.build(None),
        };
        let (public, private) = spec.build();
        let mut pt = Template::input(&public);
        let mut st = Template::input(&private);
        let mut po = Guarded::<CK_OBJECT_HANDLE>::new();
        let mut so = Guarded::<CK_OBJECT_HANDLE>::new();
        let (pp, sp) = (pt.ptr(), st.ptr());
        let (pop, sop) = (po.ptr(null_out.0), so.ptr(false));
        let before = self.tokens();
        let rv = call!(
            self,
            C_GenerateKeyPair(s, &mut m.m, pp, pt.count, sp, st.count, pop, sop)
        );
        crate::mechanism::check_empty_parameter("C_GenerateKeyPair", &m.m, Rare(false), rv);
        pt.check("C_GenerateKeyPair");
        st.check("C_GenerateKeyPair");
        po.check("C_GenerateKeyPair");
        so.check("C_GenerateKeyPair");
        self.check_unchanged("C_GenerateKeyPair", rv, &before);
        if rv != CKR_OK {
            return;
        }
        let (public_o, private_o) = (po.value, so.value);
        self.learn(s, public_o);
        self.learn(s, private_o);
        self.private.push((s, private_o));
        assert_eq!(
            self.class(s, public_o),
            Some(CKO_PUBLIC_KEY),
            "C_GenerateKeyPair: the public object"
        );
        assert_eq!(
            self.class(s, private_o),
            Some(CKO_PRIVATE_KEY),
            "C_GenerateKeyPair: the private object"
        );
        let modulus = self.modulus(s, public_o);
        assert!(
            keys()
                .pool
                .iter()
                .any(|k| rsa::traits::PublicKeyParts::n(k).to_bytes_be() == modulus),
            "C_GenerateKeyPair: a key not from the mock build's pool"
        );
        self.keypairs.push(KeyPair {
            session: s,
            private: private_o,
            public: public_o,
            modulus,
        });
        self.check_readback("C_GenerateKeyPair (public)", s, public_o, &public);
        self.check_readback("C_GenerateKeyPair (private)", s, private_o, &private);
    }

    pub fn destroy_object(&mut self, target: Target) {
        let (s, o) = self.target(target);
        let before = self.tokens();
        let rv = call!(self, C_DestroyObject(s, o));
        self.check_alive("C_DestroyObject", o, rv);
        self.check_unchanged("C_DestroyObject", rv, &before);
        if rv == CKR_OK {
            let twin = self
                .keypairs
                .iter()
                .find(|k| k.private == o)
                .map(|k| k.public);
            self.check_destroyed(o, &before, twin);
        }
    }

    pub fn set_attributes(&mut self, target: Target, spec: &SetTemplate) {
        let (s, o) = self.target(target);
        let (list, mut t) = spec.build();
        let before = self.tokens();
        let p = t.ptr();
        let rv = call!(self, C_SetAttributeValue(s, o, p, t.count));
        t.check("C_SetAttributeValue");
        self.check_alive("C_SetAttributeValue", o, rv);
        self.check_unchanged("C_SetAttributeValue", rv, &before);
        if rv == CKR_OK {
            self.check_set(s, o, &list[..t.used()]);
        }
    }

    pub fn get_attributes(&mut self, target: Target, spec: &OutTemplateSpec) {
        let (s, o) = self.target(target);
        let mut t = spec.build();
        let before: Vec<CK_ATTRIBUTE> = t.attrs().to_vec();
        let p = t.ptr();
        let rv = call!(self, C_GetAttributeValue(s, o, p, t.count));
        t.check("C_GetAttributeValue");
        self.check_alive("C_GetAttributeValue", o, rv);
        let used = t.used();
        for (i, (a, b)) in t.attrs().iter().zip(&before).enumerate() {
            assert_eq!(
                (a.type_, a.pValue),
                (b.type_, b.pValue),
                "C_GetAttributeValue changed a type or pointer"
            );
            if i >= used {
                assert_eq!(
                    a.ulValueLen, b.ulValueLen,
                    "C_GetAttributeValue: beyond the count"
                );
                continue;
            }
            if rv == CKR_OK {
                assert_ne!(
                    a.ulValueLen, CK_UNAVAILABLE_INFORMATION,
                    "C_GetAttributeValue: CKR_OK yet unavailable"
                );
            }
            // A call that failed as a whole (a bad handle) leaves the
            // template as it was, whatever length it claimed.
            let untouched = rv != CKR_OK && a.ulValueLen == b.ulValueLen;
            if let (Some(n), false) = (t.room(i), untouched) {
                assert!(
                    a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen as usize <= n,
                    "C_GetAttributeValue: {} bytes in a {n}-byte buffer",
                    a.ulValueLen
                );
            }
        }
    }

    pub fn find_objects(&mut self, session: SessionRef, max: OutLen, null_count: Rare) {
        let s = self.session(session);
        let max = max.capped(20);
        let mut found = Words::new(max.room());
        let mut count = Guarded::<CK_ULONG>::new();
        let claim = match max {
            OutLen::Null { claim } => claim % 5,
            _ => max.claim(),
        };
        let rv = call!(
            self,
            C_FindObjects(s, found.ptr(), claim, count.ptr(null_count.0))
        );
        found.check("C_FindObjects");
        count.check("C_FindObjects");
        if rv == CKR_OK {
            let c = count.value as usize;
            let n = max.room().unwrap_or(0);
            assert!(c <= n, "C_FindObjects: {c} objects in room for {n}");
            let found = found.first(c).to_vec();
            self.check_found(&found);
            for o in found {
                self.learn(s, o);
            }
        }
    }

    pub fn get_object_size(&mut self, target: Target, null_out: Rare) {
        let (s, o) = self.target(target);
        let mut size = Guarded::<CK_ULONG>::new();
        let rv = call!(self, C_GetObjectSize(s, o, size.ptr(null_out.0)));
        size.check("C_GetObjectSize");
        self.check_alive("C_GetObjectSize", o, rv);
    }
}
