//! `keyring-pkcs11`: import, generate, list, export and remove the RSA keys
//! that the keyring-pkcs11 PKCS#11 module serves from kernel keyrings.
//!
//! Everything goes through the library's own `Module` (the code behind the
//! C ABI), so the tool applies exactly the checks and metadata that
//! `C_CreateObject`, `C_GenerateKeyPair` and `C_DestroyObject` do, and a
//! refusal comes back with the kernel's errno and the same hints the
//! module's log gives.

use clap::Parser;
use std::process::ExitCode;

/// `println!` that does not panic when stdout is a closed pipe (`| head`).
macro_rules! out {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod app;
mod cmd;
mod fail;
mod keyfile;
mod secrets;
mod uri;

use fail::EXIT_INPUT;
use keyring_pkcs11_cli::args::{self, Cli, Command};

// Every heap block is wiped when freed: the library's allocator
// (`keyring_pkcs11`'s src/alloc.rs) is this program's too. A memory scrape
// of the tool after an import (tests/lab/cli-memory.sh) found fragments of
// both primes in freed memory without it (RustCrypto's bignum temporaries,
// ssh-key's decoding buffers, rpassword's growing passphrase string).
fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_INPUT)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The module logs to stderr; here its warnings would only repeat, less
    // clearly, what this tool reports itself. -v and -vv show them.
    use keyring_pkcs11::log::{self, Level};
    log::set_level(match cli.verbose {
        0 => match std::env::var("KEYRING_PKCS11_LOG") {
            Ok(v) => log::parse(Some(&v)),
            Err(_) => Level::Error,
        },
        1 => Level::Info,
        _ => Level::Debug,
    });
    let r = match cli.command {
        Command::Exec(a) => cmd::exec::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::List(a) => cmd::list::run(a),
        Command::ExportPub(a) => cmd::export::run(a),
        Command::Remove(a) => cmd::remove::run(a),
        Command::Tokens(a) => cmd::tokens::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("keyring-pkcs11: error: {}", f.msg);
            for h in &f.hints {
                eprintln!("  {h}");
            }
            ExitCode::from(f.code)
        }
    }
}
