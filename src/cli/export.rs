//! `wif-proxy export`: every listed document, fetched and validated as the
//! proxy does, written as a static mirror (see `wif_proxy::export`).
//! Exit status 0: written; 1: nothing written (a document failed, or the
//! directory could not be replaced); 2: the configuration is invalid.

use std::path::Path;
use std::process::ExitCode;

use clap::ValueEnum;
use wif_proxy::config::Config;
use wif_proxy::export::{self, ExportError, Format};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Every document, byte-identical to what the proxy serves.
    Files,
    /// Only the key sets, reduced to the members GCP's jwks_json upload accepts.
    GcpJwksJson,
}

pub fn run(config_path: &Path, out: &Path, format: ExportFormat) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let format = match format {
        ExportFormat::Files => Format::Files,
        ExportFormat::GcpJwksJson => Format::GcpJwksJson,
    };
    let result = runtime.block_on(export::fetch_all(&config)).and_then(|docs| {
        for d in &docs {
            if let Some(m) = &d.mismatch {
                eprintln!("warning: {} {}: issuer guard: {m}", d.issuer, d.path);
            }
        }
        export::write(out, &docs, format)
    });
    match result {
        Ok(written) => {
            for d in written.manifest["documents"].as_array().into_iter().flatten() {
                println!("{} {}", d["etag"].as_str().unwrap_or_default(), d["file"].as_str().unwrap_or_default());
            }
            for k in &written.dropped {
                eprintln!("warning: left out of the GCP key set: {k}");
            }
            println!("wrote {} and {}", out.display(), out.join(export::MANIFEST).display());
            ExitCode::SUCCESS
        }
        Err(e @ ExportError::Load(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
