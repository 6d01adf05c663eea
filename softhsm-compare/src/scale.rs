//! Tokens of 1 to 10,000 keys, each measured in fresh processes
//! (`softhsm-compare-probe`): keyring-pkcs11 filled through the module (keys
//! with records, `find-N`), keyring-pkcs11 filled with `keyctl padd` (no
//! records, `padd-N`) and SoftHSMv2 (`find-N`, up to 1000 keys).
//!
//!   find        the first lookup, first search by CKA_ID, first listing,
//!               then warm C_FindObjects cycles by label, by CKA_ID, all
//!   cold_label  C_Initialize → find ONE key by label → first signature
//!   cold_all    C_Initialize → read every public key → first signature
//!   rss         memory of a process that listed and read every object

use serde_json::{Value, json};
use softhsm_compare::R;
use softhsm_compare::measure::{med, round, stats};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    /// keyring-pkcs11, keys created through the module (records).
    Ours,
    /// keyring-pkcs11, keys loaded with `keyctl padd` (no records).
    Padd,
    SoftHsm,
}

impl Side {
    pub fn tag(self) -> &'static str {
        match self {
            Side::Ours => "keyring_pkcs11",
            Side::Padd => "keyring_pkcs11_padd",
            Side::SoftHsm => "softhsm",
        }
    }
    pub fn token(self, n: usize) -> String {
        match self {
            Side::Padd => format!("padd-{n}"),
            _ => format!("find-{n}"),
        }
    }
}

pub struct Scale<'a> {
    pub ours_so: &'a str,
    pub soft_so: &'a str,
    pub pin: &'a str,
    pub conf_dir: &'a str,
    pub probe: PathBuf,
    pub ours_sizes: Vec<usize>,
    pub padd_sizes: Vec<usize>,
    pub softhsm_sizes: Vec<usize>,
    pub short: f64,
    pub cold_runs: usize,
    pub limit: f64,
    pub t0: Instant,
}

fn log(msg: std::fmt::Arguments) {
    eprintln!("softhsm-compare: {msg}");
}

impl Scale<'_> {
    fn sizes(&self, side: Side) -> &[usize] {
        match side {
            Side::Ours => &self.ours_sizes,
            Side::Padd => &self.padd_sizes,
            Side::SoftHsm => &self.softhsm_sizes,
        }
    }

    fn all_sizes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = [Side::Ours, Side::Padd, Side::SoftHsm]
            .iter()
            .flat_map(|s| self.sizes(*s).to_vec())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn sides_with(&self, n: usize) -> Vec<Side> {
        [Side::Ours, Side::Padd, Side::SoftHsm]
            .into_iter()
            .filter(|s| self.sizes(*s).contains(&n))
            .collect()
    }

    /// One probe run on one token: its JSON, with `process_ms` (spawn to
    /// exit), or `{"timed_out_after_s"}` if killed at the limit.
    fn probe(&self, mode: &str, side: Side, n: usize, extra: &[&str]) -> R<Value> {
        let token = side.token(n);
        let last = crate::fill::label(&token, n - 1);
        let module = if side == Side::SoftHsm {
            self.soft_so
        } else {
            self.ours_so
        };
        let mut cmd = Command::new(&self.probe);
        cmd.args([
            mode, "--module", module, "--token", &token, "--label", &last, "--pin", self.pin,
            "--keys",
        ])
        .arg(n.to_string())
        .args(extra)
        .env(
            "SOFTHSM2_CONF",
            format!("{}/{token}/softhsm2.conf", self.conf_dir),
        )
        .env("KEYRING_PKCS11_KEYRINGS", &token);
        let t = Instant::now();
        let out = crate::run_limited(cmd, self.limit)
            .map_err(|e| format!("{mode} ({}, {token}): {e}", side.tag()))?;
        let wall = t.elapsed().as_secs_f64() * 1e3;
        Ok(match out {
            Some(o) => {
                let mut v: Value =
                    serde_json::from_slice(&o).map_err(|e| format!("{mode} child output: {e}"))?;
                v["process_ms"] = json!(round(wall));
                v
            }
            None => {
                log(format_args!(
                    "{mode} {n} keys: {} did not finish within {} s; killed",
                    side.tag(),
                    self.limit
                ));
                json!({ "timed_out_after_s": self.limit })
            }
        })
    }

    /// Warm and first-time C_FindObjects, one fresh process per token.
    pub fn find(&self) -> R<Value> {
        let mut rows = Vec::new();
        for n in self.all_sizes() {
            let mut row = json!({ "keys": n });
            for side in self.sides_with(n) {
                row[side.tag()] =
                    self.probe("find", side, n, &["--secs", &self.short.to_string()])?;
            }
            log(format_args!(
                "find {n} keys: by label ours {:.0}/s softhsm {:.1}/s; by id ours {:.0}/s softhsm {:.1}/s; list all ours {:.0}/s softhsm {:.1}/s; first by id ours {} ms, padd {} ms  [{:.0}s]",
                med(&row["keyring_pkcs11"]["by_label"]),
                med(&row["softhsm"]["by_label"]),
                med(&row["keyring_pkcs11"]["by_id"]),
                med(&row["softhsm"]["by_id"]),
                med(&row["keyring_pkcs11"]["list_all"]),
                med(&row["softhsm"]["list_all"]),
                row["keyring_pkcs11"]["first_find_by_id_ms"],
                row["keyring_pkcs11_padd"]["first_find_by_id_ms"],
                self.t0.elapsed().as_secs_f64()
            ));
            rows.push(row);
        }
        Ok(json!(rows))
    }

    /// Fresh processes, the sides alternating: `cold` (one key by label) or
    /// `cold-all` (every public key read first). A side whose first process
    /// took over 2 s gets 3 processes, not `cold_runs`.
    pub fn cold(&self, mode: &str) -> R<Value> {
        let mut rows = Vec::new();
        for n in self.all_sizes() {
            let sides = self.sides_with(n);
            let mut samples: Vec<Vec<Value>> = vec![Vec::new(); sides.len()];
            let mut reps = vec![self.cold_runs; sides.len()];
            for r in 0..self.cold_runs {
                for (i, side) in sides.iter().enumerate() {
                    if r >= reps[i] {
                        continue;
                    }
                    let v = self.probe(mode, *side, n, &[])?;
                    if v["timed_out_after_s"].is_number() {
                        reps[i] = 0;
                    } else if r == 0 && v["total_ms"].as_f64().unwrap_or(0.0) > 2000.0 {
                        reps[i] = self.cold_runs.min(3);
                    }
                    samples[i].push(v);
                }
            }
            let mut row = json!({ "keys": n });
            for (i, side) in sides.iter().enumerate() {
                row[side.tag()] = summarize(&samples[i]);
            }
            log(format_args!(
                "{mode} {n} keys: ours {:.1} ms, padd {:.1} ms, softhsm {:.1} ms  [{:.0}s]",
                med(&row["keyring_pkcs11"]["total_ms"]),
                med(&row["keyring_pkcs11_padd"]["total_ms"]),
                med(&row["softhsm"]["total_ms"]),
                self.t0.elapsed().as_secs_f64()
            ));
            rows.push(row);
        }
        Ok(json!(rows))
    }

    /// Memory after listing and reading every object: one process per token.
    pub fn rss(&self) -> R<Value> {
        let mut rows = Vec::new();
        for n in self.all_sizes() {
            let mut row = json!({ "keys": n });
            for side in self.sides_with(n) {
                row[side.tag()] = self.probe("rss", side, n, &[])?;
            }
            log(format_args!(
                "rss {n} keys: VmHWM ours {} kB, padd {} kB, softhsm {} kB  [{:.0}s]",
                row["keyring_pkcs11"]["vm_hwm_kb"],
                row["keyring_pkcs11_padd"]["vm_hwm_kb"],
                row["softhsm"]["vm_hwm_kb"],
                self.t0.elapsed().as_secs_f64()
            ));
            rows.push(row);
        }
        Ok(json!(rows))
    }
}

/// Median/min/max of every numeric field of the samples; `runs` of
/// `total_ms`; a timed-out process is kept as such.
pub fn summarize(samples: &[Value]) -> Value {
    let mut out = json!({});
    if let Some(t) = samples.iter().find_map(|s| s["timed_out_after_s"].as_f64()) {
        out["timed_out_after_s"] = json!(t);
    }
    let ok: Vec<&Value> = samples
        .iter()
        .filter(|s| !s["timed_out_after_s"].is_number())
        .collect();
    if let Some(first) = ok.first().and_then(|s| s.as_object()) {
        for (k, v) in first {
            if v.is_number() {
                let v: Vec<f64> = ok.iter().filter_map(|s| s[k].as_f64()).collect();
                out[k] = stats(&v);
            }
        }
    }
    out["processes"] = json!(ok.len());
    out
}
