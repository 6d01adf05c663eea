//! Results → `results.json` (bench numbers + functional table + machine +
//! targets), `results.md` and the charts (gnuplot). Runs on the host.
//!
//!   softhsm-compare report --bench BENCH.json --functional FUNCTIONAL.tsv
//!       --meta META.env [--native VERIFY-NATIVE.json] --out DIR
//!   softhsm-compare report --bench results/results.json --out DIR   (again, from a result)

use serde_json::{Value, json};
use softhsm_compare::R;
use softhsm_compare::measure::{med, round};
use std::collections::HashMap;
use std::fmt::Write as _;

pub(crate) fn num(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a >= 1000.0 {
        // Thousands separated by a thin space keep wide numbers readable.
        let s = format!("{:.0}", x);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push('\u{202f}');
            }
            out.push(c);
        }
        out
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// "median (min–max)"
pub(crate) fn spread(v: &Value) -> String {
    if !med(v).is_finite() {
        return "–".into();
    }
    format!(
        "{} ({}–{})",
        num(med(v)),
        num(v["min"].as_f64().unwrap_or(f64::NAN)),
        num(v["max"].as_f64().unwrap_or(f64::NAN))
    )
}

pub(crate) fn ratio(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    if x >= 10.0 {
        format!("{x:.0}×")
    } else {
        format!("{x:.2}×")
    }
}

pub(crate) fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

pub fn report(a: &HashMap<String, String>) -> R<()> {
    let get = |k: &str| a.get(k).cloned().ok_or(format!("--{k} is required"));
    let mut bench: Value =
        serde_json::from_str(&std::fs::read_to_string(get("bench")?).map_err(|e| e.to_string())?)
            .map_err(|e| format!("bench JSON: {e}"))?;
    // What the guest measured outside the benchmark binary: how the big
    // tokens were filled (JSON lines), the TLS handshakes, and how the keys
    // were made on the host.
    if let Some(f) = a.get("fills") {
        let t = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
        let v: Vec<Value> = t
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| format!("{f}: {e}: {l}")))
            .collect::<R<_>>()?;
        bench["fills"] = json!(v);
    }
    for (k, key) in [("tls", "tls"), ("keygen", "keygen")] {
        if let Some(f) = a.get(k) {
            let t = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
            bench[key] = serde_json::from_str(&t).map_err(|e| format!("{f}: {e}"))?;
        }
    }
    let out = get("out")?;
    // --meta and --functional may be left out when --bench is an earlier
    // results.json, which carries both: the report is then made again from it.
    let mut meta = bench["machine"].as_object().cloned().unwrap_or_default();
    if let Some(f) = a.get("meta") {
        for line in std::fs::read_to_string(f)
            .map_err(|e| e.to_string())?
            .lines()
        {
            if let Some((k, v)) = line.split_once('=') {
                meta.insert(k.trim().to_string(), json!(v.trim()));
            }
        }
    }
    let mut functional = bench["functional"].as_array().cloned().unwrap_or_default();
    if let Some(f) = a.get("functional") {
        functional.clear();
        for line in std::fs::read_to_string(f)
            .map_err(|e| e.to_string())?
            .lines()
        {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() >= 4 {
                functional.push(json!({ "id": f[0], "scenario": f[1], "module": f[2], "result": f[3], "note": f.get(4).unwrap_or(&"") }));
            }
        }
    }

    // --- targets -------------------------------------------------------------
    let mut targets = Vec::new();
    let mut target = |name: &str, measured: String, met: bool, detail: Value| {
        targets.push(json!({ "target": name, "measured": measured, "met": met, "detail": detail }));
    };
    let empty = vec![];
    let sign = bench["sign"].as_array().unwrap_or(&empty);
    if !sign.is_empty() {
        // Run-by-run (paired) ratios: see the benchmark's comment.
        let ratios: Vec<(String, f64)> = sign
            .iter()
            .map(|r| {
                (
                    format!(
                        "RSA-{} {} {}t",
                        r["bits"],
                        short(&r["mechanism"]),
                        r["threads"]
                    ),
                    med(&r["ours_over_raw_paired"]),
                )
            })
            .collect();
        let worst = ratios
            .iter()
            .cloned()
            .fold(("".to_string(), f64::INFINITY), |a, b| {
                if b.1 < a.1 { b } else { a }
            });
        target(
            "C_Sign ≥ 97 % of the raw syscall, every key size, 1 and 2 threads",
            format!(
                "lowest {} ({}); all: {}",
                pct(worst.1),
                worst.0,
                ratios
                    .iter()
                    .map(|(n, r)| format!("{n} {}", pct(*r)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ratios.iter().all(|(_, r)| *r >= 0.97),
            json!(
                ratios
                    .iter()
                    .map(|(n, r)| json!({"case": n, "ours_over_raw": round(*r)}))
                    .collect::<Vec<_>>()
            ),
        );
        let mut sc = Vec::new();
        for r2 in sign.iter().filter(|r| r["threads"] == 2) {
            let p = &r2["two_over_one_threads_paired"];
            sc.push((
                format!("RSA-{} {}", r2["bits"], short(&r2["mechanism"])),
                med(&p["keyring_pkcs11"]),
                med(&p["raw_syscall"]),
            ));
        }
        let worst = sc.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
        target(
            "2 threads ≥ 1.9× one thread (C_Sign)",
            format!(
                "lowest {worst:.3}×; all: {} (the raw syscall itself: {})",
                sc.iter().map(|(n, o, _)| format!("{n} {o:.3}×")).collect::<Vec<_>>().join(", "),
                sc.iter().map(|(n, _, r)| format!("{n} {r:.3}×")).collect::<Vec<_>>().join(", ")
            ),
            sc.iter().all(|x| x.1 >= 1.9),
            json!(sc.iter().map(|(n, o, r)| json!({"case": n, "ours_2t_over_1t": round(*o), "raw_2t_over_1t": round(*r)})).collect::<Vec<_>>()),
        );
    }
    if let Some(find) = bench["find"].as_array() {
        // The largest token both modules were measured on.
        if let Some(r) = find
            .iter()
            .filter(|r| r["softhsm"].is_object() && r["keyring_pkcs11"].is_object())
            .max_by_key(|r| r["keys"].as_u64().unwrap_or(0))
        {
            let name = format!(
                "C_FindObjects over {} keys ≥ 100× SoftHSMv2's cycles/s",
                r["keys"]
            );
            if let Some(t) = r["keyring_pkcs11"]["timed_out_after_s"].as_f64() {
                target(
                    &name,
                    format!(
                        "not measured: keyring-pkcs11's first lookup on this token did not finish within {t:.0} s (it recovers every key's public key first)"
                    ),
                    false,
                    json!({"timed_out_after_s": t}),
                );
            } else {
                let bl = med(&r["keyring_pkcs11"]["by_label"]) / med(&r["softhsm"]["by_label"]);
                let la = med(&r["keyring_pkcs11"]["list_all"]) / med(&r["softhsm"]["list_all"]);
                target(
                    &name,
                    format!("by label {}, listing all objects {}", ratio(bl), ratio(la)),
                    bl >= 100.0 && la >= 100.0,
                    json!({"by_label": round(bl), "list_all": round(la)}),
                );
            }
        }
    }
    if bench["attributes"].is_object() {
        let at = &bench["attributes"];
        let x = med(&at["keyring_pkcs11"]["public_id_modulus_exponent"])
            / med(&at["softhsm"]["public_id_modulus_exponent"]);
        let y = med(&at["keyring_pkcs11"]["private_key_type"])
            / med(&at["softhsm"]["private_key_type"]);
        target(
            "C_GetAttributeValue ≥ 10× SoftHSMv2",
            format!(
                "CKA_ID+CKA_MODULUS+CKA_PUBLIC_EXPONENT {}; CKA_KEY_TYPE {}",
                ratio(x),
                ratio(y)
            ),
            x >= 10.0 && y >= 10.0,
            json!({"public_id_modulus_exponent": round(x), "private_key_type": round(y)}),
        );
    }
    if let Some(v) = bench["verify"].as_array() {
        let rs: Vec<(u64, f64, f64)> = v
            .iter()
            .map(|r| {
                (
                    r["bits"].as_u64().unwrap_or(0),
                    med(&r["keyring_pkcs11_pkcs1"]) / med(&r["kernel_pkey_verify"]),
                    med(&r["ring_pkcs1"]) / med(&r["kernel_pkey_verify"]),
                )
            })
            .collect();
        target(
            "C_Verify ≥ 10× the kernel's PKEY_VERIFY",
            format!(
                "{} (ring in userspace would give {})",
                rs.iter().map(|(b, o, _)| format!("RSA-{b} {}", ratio(*o))).collect::<Vec<_>>().join(", "),
                rs.iter().map(|(b, _, r)| format!("RSA-{b} {}", ratio(*r))).collect::<Vec<_>>().join(", ")
            ),
            rs.iter().all(|x| x.1 >= 10.0),
            json!(rs.iter().map(|(b, o, r)| json!({"bits": b, "ours_over_kernel": round(*o), "ring_over_kernel": round(*r)})).collect::<Vec<_>>()),
        );
    }
    if let Some(c) = bench["cold_start"].as_array() {
        if let Some(r) = c.first() {
            let o = med(&r["keyring_pkcs11"]["total_ms"]);
            let s = med(&r["softhsm"]["total_ms"]);
            target(
                "C_Initialize → first signature no slower than SoftHSMv2",
                format!(
                    "{} ms vs {} ms ({} keys in the token): ours takes {} of SoftHSMv2's time",
                    num(o),
                    num(s),
                    r["keys_in_token"],
                    pct(o / s)
                ),
                o <= s,
                json!({"ours_ms": o, "softhsm_ms": s}),
            );
        }
    }

    targets.extend(crate::report_scale::targets(&bench));

    let mut all = bench.clone();
    for k in ["machine", "functional", "targets"] {
        if let Some(o) = all.as_object_mut() {
            o.remove(k);
        }
    }
    if let Some(nf) = a.get("native") {
        if let Ok(t) = std::fs::read_to_string(nf) {
            if let Ok(v) = serde_json::from_str::<Value>(&t) {
                all["verify_native"] = v["verify_native"].clone();
            }
        }
    }
    all["machine"] = Value::Object(meta.clone());
    all["functional"] = json!(functional);
    all["targets"] = json!(targets);
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    std::fs::write(
        format!("{out}/results.json"),
        serde_json::to_string_pretty(&all).unwrap(),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(format!("{out}/results.md"), markdown(&all, &meta))
        .map_err(|e| e.to_string())?;
    charts(&all, &out)?;
    eprintln!(
        "softhsm-compare report: wrote {out}/results.json, results.md, throughput.png, find-scaling.png"
    );
    Ok(())
}

fn short(m: &Value) -> &'static str {
    match m.as_str() {
        Some("CKM_SHA256_RSA_PKCS_PSS") => "PSS",
        _ => "PKCS#1",
    }
}

fn markdown(all: &Value, meta: &serde_json::Map<String, Value>) -> String {
    let m = |k: &str| {
        meta.get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    let mut s = String::new();
    let st = &all["settings"];
    let _ = writeln!(s, "# keyring-pkcs11 and SoftHSMv2, side by side\n");
    let _ = writeln!(
        s,
        "Measured {} in one run on one machine: Linux {} (Debian's kernel, booted in the project's QEMU lab: TCG software emulation, 2 vCPUs) on a host with {} ({} CPUs). \
SoftHSMv2 {} (Debian `softhsm2`, OpenSSL backend, {}), keyring-pkcs11 {}. \
Emulation slows everything (the kernel's C code ~3×, OpenSSL's assembly ~15×): **compare ratios within this run, not absolute numbers**.\n",
        m("date"),
        m("kernel"),
        m("host_cpu"),
        m("host_cpus"),
        m("softhsm"),
        m("openssl"),
        m("module")
    );
    let _ = writeln!(
        s,
        "Host load when the guest started: {}; when it had finished: {}.\n",
        m("host_busy_before"),
        m("host_busy_after")
    );
    // The load average right after the guest is mostly the guest's own two
    // vCPUs: at the end only other guests tell of other work.
    if let Some(why) = busy(&m("host_busy_before"), 1.5).or(busy(&m("host_busy_after"), f64::MAX)) {
        let _ = writeln!(
            s,
            "**Taken on a busy host** ({why}): the guest's two vCPUs shared the host's two CPUs with other work, which slows them unevenly; \
ratios between back-to-back measurements hold best, the 2-thread numbers least. A run on a quiet host (`softhsm-compare/run --wait-quiet MIN`) is still to be done.\n"
        );
    }
    if meta.get("quick").is_some() {
        let _ = writeln!(
            s,
            "**A smoke test (`--quick`), not a measurement**: one short run of everything, small tokens; targets name the sizes measured instead.\n"
        );
    }
    let _ = writeln!(
        s,
        "Throughputs are the median of {} runs (min–max in brackets) of {} s each for signatures, {} s for the rest; cold starts are the median of {} fresh processes. \
Every benchmarked call is one raw PKCS#11 call through the module's function list, identical for both modules; both are initialised with `CKF_OS_LOCKING_OK` and logged in (keyring-pkcs11 accepts any PIN).\n",
        st["runs"], st["seconds_per_sign_run"], st["seconds_per_short_run"], st["cold_runs"]
    );

    // Targets
    if let Some(t) = all["targets"].as_array() {
        let _ = writeln!(
            s,
            "## Targets\n\n| target | measured | met |\n|---|---|---|"
        );
        for x in t {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                x["target"].as_str().unwrap_or(""),
                x["measured"].as_str().unwrap_or(""),
                match x["met"].as_bool() {
                    Some(true) => "**yes**",
                    Some(false) => "**no**",
                    None => "reported (no target)",
                }
            );
        }
        s.push('\n');
    }

    // Functional
    if let Some(f) = all["functional"].as_array() {
        let mut ids: Vec<(String, String)> = Vec::new();
        for r in f {
            let id = r["id"].as_str().unwrap_or("").to_string();
            if !ids.iter().any(|(i, _)| *i == id) {
                ids.push((id, r["scenario"].as_str().unwrap_or("").to_string()));
            }
        }
        let cell = |id: &str, module: &str| -> (String, String) {
            f.iter()
                .find(|r| r["id"] == id && r["module"] == module)
                .map(|r| {
                    let res = r["result"].as_str().unwrap_or("?");
                    let shown = match res {
                        "pass" => "pass".to_string(),
                        "fallback" => "pass, via libp11's fallback".to_string(),
                        _ => format!("**{res}**"),
                    };
                    (shown, r["note"].as_str().unwrap_or("").to_string())
                })
                .unwrap_or(("–".into(), String::new()))
        };
        let _ = writeln!(
            s,
            "## Functional: the same client scenarios on both modules\n"
        );
        let _ = writeln!(
            s,
            "| client scenario | SoftHSMv2 | keyring-pkcs11 | notes |\n|---|---|---|---|"
        );
        for (id, name) in &ids {
            let (a, na) = cell(id, "softhsm");
            let (b, nb) = cell(id, "keyring-pkcs11");
            let mut notes = Vec::new();
            if !na.is_empty() {
                notes.push(format!("SoftHSMv2: {na}"));
            }
            if !nb.is_empty() {
                notes.push(format!("keyring-pkcs11: {nb}"));
            }
            let _ = writeln!(s, "| {name} | {a} | {b} | {} |", notes.join("; "));
        }
        s.push('\n');
    }

    // Sign
    if let Some(rows) = all["sign"].as_array() {
        let _ = writeln!(
            s,
            "## C_Sign throughput (signatures/s)\n\n\
`raw syscall` is the kernel alone, called directly on the same key: `KEYCTL_PKEY_SIGN enc=pkcs1 hash=sha256` for PKCS#1 v1.5, \
and for PSS the raw private operation `KEYCTL_PKEY_DECRYPT enc=raw` that the module's PSS is built on — the limit for a kernel-held key. \
keyring-pkcs11 and SoftHSMv2 are `C_SignInit` + `C_Sign` over a {}-byte message, each thread with its own session.\n",
            all["settings"]["message_bytes"]
        );
        let _ = writeln!(
            s,
            "| key | mechanism | threads | raw syscall | keyring-pkcs11 | ours / raw (paired runs) | SoftHSMv2 | ours / SoftHSMv2 |\n|---|---|---|---|---|---|---|---|"
        );
        for r in rows {
            let o = med(&r["keyring_pkcs11"]);
            let p = &r["ours_over_raw_paired"];
            let _ = writeln!(
                s,
                "| RSA-{} | {} | {} | {} | {} | {} ({}–{}) | {} | {} |",
                r["bits"],
                short(&r["mechanism"]),
                r["threads"],
                spread(&r["raw_syscall"]),
                spread(&r["keyring_pkcs11"]),
                pct(med(p)),
                pct(p["min"].as_f64().unwrap_or(f64::NAN)),
                pct(p["max"].as_f64().unwrap_or(f64::NAN)),
                spread(&r["softhsm"]),
                ratio(o / med(&r["softhsm"]))
            );
        }
        let ov = &all["sign_overhead_syscalls"];
        if ov.is_object() {
            let us = |v: &Value| 1e6 / med(v);
            let sig_ms = rows
                .iter()
                .find(|r| {
                    r["bits"] == 2048 && r["threads"] == 1 && short(&r["mechanism"]) == "PKCS#1"
                })
                .map(|r| 1e3 / med(&r["raw_syscall"]))
                .unwrap_or(f64::NAN);
            if ov["search_user_keyring"].is_object() {
                let links = |k: &str| ov[k]["links"].as_u64().unwrap_or(0);
                let _ = writeln!(
                    s,
                    "\nWhat `C_SignInit` adds around each signature, timed alone: `KEYCTL_SEARCH` of the token's keyring for the key's label \
{} µs in the benchmark token ({} links), {} µs in the largest token ({} links) — against {} ms for one RSA-2048 signature. \
What that search replaced: `KEYCTL_READ` of the keyring's links, {} µs and {} µs, and `KEYCTL_PKEY_QUERY`, {} µs (RSA-2048) / {} µs (RSA-4096).",
                    num(us(&ov["search_user_keyring"]["per_s"])),
                    links("read_user_keyring"),
                    num(us(&ov["search_largest_find_keyring"]["per_s"])),
                    links("read_largest_find_keyring"),
                    num(sig_ms),
                    num(us(&ov["read_user_keyring"]["per_s"])),
                    num(us(&ov["read_largest_find_keyring"]["per_s"])),
                    num(us(&ov["pkey_query_2048"])),
                    num(us(&ov["pkey_query_4096"])),
                );
            } else {
                let _ = writeln!(
                    s,
                    "\nWhat `C_SignInit` adds around each signature, timed alone: `KEYCTL_READ` of the token's keyring {} µs, \
`KEYCTL_PKEY_QUERY` {} µs (RSA-2048) / {} µs (RSA-4096) — against {} ms for one RSA-2048 signature.",
                    num(us(&ov["read_user_keyring"]["per_s"])),
                    num(us(&ov["pkey_query_2048"])),
                    num(us(&ov["pkey_query_4096"])),
                    num(sig_ms)
                );
            }
        }
        s.push_str("\n![C_Sign throughput](throughput.png)\n\n");
        let _ = writeln!(
            s,
            "Two threads over one (C_Sign; median of the runs' own ratios, min–max):\n\n| key | mechanism | keyring-pkcs11 | raw syscall | SoftHSMv2 |\n|---|---|---|---|---|"
        );
        for r2 in rows.iter().filter(|r| r["threads"] == 2) {
            let p = &r2["two_over_one_threads_paired"];
            let q = |k: &str| {
                format!(
                    "{} ({}–{})",
                    ratio(med(&p[k])),
                    ratio(p[k]["min"].as_f64().unwrap_or(f64::NAN)),
                    ratio(p[k]["max"].as_f64().unwrap_or(f64::NAN))
                )
            };
            let _ = writeln!(
                s,
                "| RSA-{} | {} | {} | {} | {} |",
                r2["bits"],
                short(&r2["mechanism"]),
                q("keyring_pkcs11"),
                q("raw_syscall"),
                q("softhsm")
            );
        }
        s.push('\n');
    }

    // Verify
    if let Some(rows) = all["verify"].as_array() {
        let _ = writeln!(
            s,
            "## Verify throughput (verifications/s, one thread)\n\n\
keyring-pkcs11 verifies in userspace: x^e mod n by square-and-multiply (`num-bigint`) on the public key it recovered from the kernel key, padding checks, \
and at `C_VerifyInit` a check that the key is still linked and alive (`KEYCTL_READ` of the keyring, `KEYCTL_DESCRIBE`); \
`kernel PKEY_VERIFY` is the kernel's own PKCS#1 verification called directly; `ring` is the [ring](https://docs.rs/ring) crate verifying \
in-process with the same public key, `OpenSSL raw public op` is x^e mod n by libcrypto (`RSA_public_decrypt`, no padding), and `rsa crate` is the \
pure-Rust [rsa](https://docs.rs/rsa) crate's PKCS#1 v1.5 verification (num-bigint-dig) — experiments: what C_Verify could reach in userspace.\n"
        );
        let _ = writeln!(
            s,
            "| key | kernel PKEY_VERIFY | keyring-pkcs11 PKCS#1 | keyring-pkcs11 PSS | SoftHSMv2 PKCS#1 | SoftHSMv2 PSS | ring PKCS#1 | ring PSS | OpenSSL raw public op | rsa crate PKCS#1 |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in rows {
            let _ = writeln!(
                s,
                "| RSA-{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r["bits"],
                spread(&r["kernel_pkey_verify"]),
                spread(&r["keyring_pkcs11_pkcs1"]),
                spread(&r["keyring_pkcs11_pss"]),
                spread(&r["softhsm_pkcs1"]),
                spread(&r["softhsm_pss"]),
                spread(&r["ring_pkcs1"]),
                spread(&r["ring_pss"]),
                spread(&r["openssl_raw_public_op"]),
                spread(&r["rsa_crate_pkcs1"])
            );
        }
        s.push('\n');
    }

    if let Some(rows) = all["verify_native"].as_array() {
        let _ = writeln!(
            s,
            "Without emulation, on the host itself ({}), whose kernel holds certificates but not private keys: the kernel's PKEY_VERIFY \
on a self-signed certificate of the same key, against the same userspace code (`softhsm-compare verify-native`); \
`keyring-pkcs11's public op` is the module's x^e mod n alone (`pubkey::pow_small`, what its C_Verify computes):\n",
            m("host_cpu")
        );
        let _ = writeln!(
            s,
            "| key | kernel PKEY_VERIFY | ring PKCS#1 verify | ring / kernel | OpenSSL raw public op | OpenSSL / kernel | rsa crate PKCS#1 verify | rsa crate / kernel | keyring-pkcs11's public op | ours / kernel |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in rows {
            let k = med(&r["kernel_pkey_verify"]);
            let _ = writeln!(
                s,
                "| RSA-{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r["bits"],
                spread(&r["kernel_pkey_verify"]),
                spread(&r["ring_pkcs1_verify"]),
                ratio(med(&r["ring_pkcs1_verify"]) / k),
                spread(&r["openssl_raw_public_op"]),
                ratio(med(&r["openssl_raw_public_op"]) / k),
                spread(&r["rsa_crate_pkcs1_verify"]),
                ratio(med(&r["rsa_crate_pkcs1_verify"]) / k),
                spread(&r["keyring_pkcs11_public_op"]),
                ratio(med(&r["keyring_pkcs11_public_op"]) / k)
            );
        }
        s.push('\n');
    }

    // Attributes
    if all["attributes"].is_object() {
        let at = &all["attributes"];
        let _ = writeln!(s, "## C_GetAttributeValue (calls/s, RSA-2048 objects)\n");
        let _ = writeln!(
            s,
            "| attributes read in one call | keyring-pkcs11 | SoftHSMv2 | ratio |\n|---|---|---|---|"
        );
        for (k, name) in [
            (
                "public_id_modulus_exponent",
                "public key: CKA_ID, CKA_MODULUS, CKA_PUBLIC_EXPONENT (what OpenSSH reads)",
            ),
            ("private_key_type", "private key: CKA_KEY_TYPE"),
        ] {
            let o = &at["keyring_pkcs11"][k];
            let h = &at["softhsm"][k];
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} |",
                spread(o),
                spread(h),
                ratio(med(o) / med(h))
            );
        }
        s.push('\n');
    }

    // Cold start
    if let Some(rows) = all["cold_start"].as_array() {
        let _ = writeln!(
            s,
            "## C_Initialize → first signature (ms, fresh process each time)\n\n\
What an `ssh -I` login pays before its signature: `dlopen` + `C_GetFunctionList`, `C_Initialize`, token lookup + `C_OpenSession` (+ `C_Login` where the token requires it: SoftHSMv2), \
`C_FindObjects` by label, `C_SignInit` + `C_Sign` (CKM_SHA256_RSA_PKCS, RSA-2048). `process` is spawn to exit as the parent sees it.\n"
        );
        let _ = writeln!(
            s,
            "| token | module | total | dlopen | C_Initialize | session (+login) | find | sign | process |\n|---|---|---|---|---|---|---|---|---|"
        );
        for r in rows {
            for (k, name) in [
                ("keyring_pkcs11", "keyring-pkcs11"),
                ("softhsm", "SoftHSMv2"),
            ] {
                let x = &r[k];
                let _ = writeln!(
                    s,
                    "| {} keys | {name} | {} | {} | {} | {} | {} | {} | {} |",
                    r["keys_in_token"],
                    spread(&x["total_ms"]),
                    num(med(&x["dlopen_ms"])),
                    num(med(&x["initialize_ms"])),
                    num(med(&x["session_login_ms"])),
                    num(med(&x["find_ms"])),
                    num(med(&x["sign_ms"])),
                    num(med(&x["process_ms"]))
                );
            }
        }
        s.push('\n');
        if let Some(r) = rows.first() {
            let base = all["baseline_process"]["vm_hwm_kb"]
                .as_f64()
                .unwrap_or(f64::NAN);
            let o = med(&r["keyring_pkcs11"]["vm_hwm_kb"]);
            let h = med(&r["softhsm"]["vm_hwm_kb"]);
            let _ = writeln!(
                s,
                "## Peak RSS (VmHWM, kB) of a process that loaded the module and signed once\n\n\
| | keyring-pkcs11 | SoftHSMv2 | the benchmark process alone |\n|---|---|---|---|\n| VmHWM | {} | {} | {} |\n| above the process alone | {} | {} | |\n",
                num(o),
                num(h),
                num(base),
                num(o - base),
                num(h - base)
            );
        }
    }
    crate::report_scale::markdown(all, &mut s);
    s
}

/// Why a "N other QEMU processes, load average A B C" line says the host
/// was busy (another guest, or a 1-minute load above `max_load`), if it does.
fn busy(line: &str, max_load: f64) -> Option<String> {
    let others: u64 = line.split_whitespace().next()?.parse().ok()?;
    let load: f64 = line
        .split("load average")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    (others > 0 || load > max_load)
        .then(|| format!("{others} other QEMU guests, load average {load}"))
}

pub(crate) fn gnuplot(script: &str, out: &str) -> R<()> {
    use std::io::Write;
    let mut c = std::process::Command::new("gnuplot")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("gnuplot (apt-get install gnuplot-nox): {e}"))?;
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let st = c.wait().map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("gnuplot failed making {out}"));
    }
    Ok(())
}

fn charts(all: &Value, out: &str) -> R<()> {
    let m = &all["machine"];
    let sub = format!(
        "Linux {} in QEMU/TCG (2 vCPUs) on {}, {}",
        m["kernel"].as_str().unwrap_or("?"),
        m["host_cpu"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?")
    )
    .replace('"', "'");
    if let Some(rows) = all["sign"].as_array() {
        let mut data = String::new();
        for t in [1, 2] {
            for r in rows.iter().filter(|r| r["threads"] == t) {
                let col = |k: &str| {
                    format!(
                        "{} {} {}",
                        med(&r[k]),
                        r[k]["min"].as_f64().unwrap_or(0.0),
                        r[k]["max"].as_f64().unwrap_or(0.0)
                    )
                };
                let _ = writeln!(
                    data,
                    "\"RSA-{}\\n{}\" {} {} {}",
                    r["bits"],
                    short(&r["mechanism"]),
                    col("raw_syscall"),
                    col("keyring_pkcs11"),
                    col("softhsm")
                );
            }
            data.push_str("e\n");
        }
        let block = |t: usize| -> String {
            let d: Vec<&str> = data.split("e\n").collect();
            let d = d.get(t - 1).copied().unwrap_or("");
            format!("{d}e\n{d}e\n{d}e\n")
        };
        let script = format!(
            r##"set terminal pngcairo size 1400,620 font "DejaVu Sans,11"
set output "{out}/throughput.png"
set termoption noenhanced
set multiplot layout 1,2 title "C_Sign throughput: the raw kernel syscall, keyring-pkcs11, SoftHSMv2 (signatures/s, log scale; bars: median, whiskers: min-max)\n{sub}"
set bmargin 4
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set yrange [1:{ymax}]
set grid ytics
set key top right
set ylabel "signatures/s"
set xtics font ",10"
set title "1 thread"
plot '-' using 2:3:4:xtic(1) title "raw KEYCTL syscall" lc rgb "#9e9e9e", '-' using 5:6:7 title "keyring-pkcs11" lc rgb "#1f77b4", '-' using 8:9:10 title "SoftHSMv2" lc rgb "#ff7f0e"
{b1}set title "2 threads"
plot '-' using 2:3:4:xtic(1) title "raw KEYCTL syscall" lc rgb "#9e9e9e", '-' using 5:6:7 title "keyring-pkcs11" lc rgb "#1f77b4", '-' using 8:9:10 title "SoftHSMv2" lc rgb "#ff7f0e"
{b2}unset multiplot
"##,
            b1 = block(1),
            b2 = block(2),
            ymax = {
                let m = rows
                    .iter()
                    .flat_map(|r| {
                        ["raw_syscall", "keyring_pkcs11", "softhsm"]
                            .map(|k| r[k]["max"].as_f64().unwrap_or(1.0))
                    })
                    .fold(1.0, f64::max);
                10f64.powf((m * 1.5).log10().ceil())
            }
        );
        gnuplot(&script, "throughput.png")?;
    }
    crate::report_scale::charts(all, out, &sub)?;
    Ok(())
}
