//! Writes the man pages and shell completions of `keyring-pkcs11` from its
//! clap definitions, so they always describe the tool that is shipped:
//!
//! ```sh
//! cargo run -p keyring-pkcs11-cli --example gen-docs -- OUTDIR
//! ```
//!
//! `scripts/deb` runs it at package-build time; nothing it writes is
//! committed. OUTDIR gets `man1/keyring-pkcs11.1`, one page per command
//! (`man1/keyring-pkcs11-import.1`, …) and `completions/` for bash
//! (`keyring-pkcs11.bash`), zsh (`_keyring-pkcs11`) and fish
//! (`keyring-pkcs11.fish`).

use clap::CommandFactory;
use clap_complete::Shell;
use keyring_pkcs11_cli::args::Cli;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: gen-docs OUTDIR");
        std::process::exit(2);
    };
    let man = out.join("man1");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    clap_mangen::generate_to(Cli::command(), &man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path =
            clap_complete::generate_to(shell, &mut Cli::command(), "keyring-pkcs11", &completions)?;
        println!("{}", path.display());
    }
    for page in std::fs::read_dir(&man)? {
        println!("{}", page?.path().display());
    }
    Ok(())
}
