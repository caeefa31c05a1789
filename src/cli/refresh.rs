//! `wif-proxy refresh`: `POST /refresh` to the running proxy's admin
//! listener, for scripts and runbooks (the emergency key rotation).
//! Exit status 0: every document refetched; 1: one failed, or the proxy
//! refused or could not be reached; 2: usage.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Long enough for a round over slow issuers (each bounded by its
/// `upstream_timeout`), short enough that a script does not hang.
const TIMEOUT: Duration = Duration::from_secs(60);

/// What the proxy's log names the caller as.
const AGENT: &str = concat!("wif-proxy-refresh/", env!("CARGO_PKG_VERSION"));

pub fn run(config_path: &Path, issuer: Option<&str>, admin: Option<SocketAddr>, json: bool) -> ExitCode {
    let addr = match super::admin::address(config_path, admin) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let target = match issuer {
        Some(name) => format!("/refresh?issuer={name}"),
        None => "/refresh".to_string(),
    };
    let Some(runtime) = super::one_thread_runtime() else { return ExitCode::FAILURE };
    let (status, body) = match runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, super::admin::ask(addr, http::Method::POST, &target, AGENT)).await
    }) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("error: POST http://{addr}{target}: {e:#}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!("error: POST http://{addr}{target}: no answer within {}s", TIMEOUT.as_secs());
            return ExitCode::FAILURE;
        }
    };
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if json {
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    }
    if status != 200 {
        if !json {
            eprintln!("error: the proxy answered {status}: {}", String::from_utf8_lossy(&body));
        }
        return ExitCode::FAILURE;
    }
    // A 200 that is not the report (something else on the admin port): no
    // refresh is known to have happened.
    let Some(failed) = value["failed"].as_u64() else {
        eprintln!("error: POST http://{addr}{target}: the answer is not a refresh report");
        return ExitCode::FAILURE;
    };
    if !json {
        for d in value["documents"].as_array().into_iter().flatten() {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            let list = |k: &str| -> Vec<String> {
                d[k].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
            };
            let detail = match s("result").as_str() {
                "failed" => format!(": {}", s("error")),
                "changed" if d.get("kids_added").is_some() => {
                    format!(
                        ": kids added [{}], removed [{}]",
                        list("kids_added").join(", "),
                        list("kids_removed").join(", ")
                    )
                }
                _ => String::new(),
            };
            println!("{:<9} {} {}{detail}", s("result"), s("issuer"), s("path"));
        }
        println!(
            "{} changed, {} unchanged, {failed} failed{}",
            value["changed"],
            value["unchanged"],
            if value["coalesced"] == true { " (shared a refresh already running)" } else { "" }
        );
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
