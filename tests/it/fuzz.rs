//! Replays every input the fuzzers found (`fuzz/regressions/<target>/`) and
//! every seed (`fuzz/seeds/<target>/`) through the same checks the fuzz
//! targets run (`fuzz/checks.rs`), so a finding stays fixed. The fuzzers
//! themselves run from `scripts/fuzz` (bounded, in `scripts/test`).

#[allow(dead_code)]
#[path = "../../fuzz/checks.rs"]
pub mod checks;

#[test]
fn every_kept_fuzz_input_passes_its_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = Vec::new();
    for (target, check) in checks::TARGETS {
        for dir in ["regressions", "seeds"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
            for entry in entries {
                let path = entry.expect("dir entry").path();
                let data = std::fs::read(&path).expect("read input");
                check(&data);
                replayed.push(path);
            }
        }
    }
    // The kept findings are there (a moved directory must not pass silently).
    for kept in ["regressions/proxy_header/v2-local-split-read", "regressions/ranges/v6-prefix-over-ipv4-mapped"] {
        assert!(replayed.contains(&root.join(kept)), "{kept} was not replayed");
    }
}
