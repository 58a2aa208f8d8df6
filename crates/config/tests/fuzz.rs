//! Inputs the fuzzer (`fuzz/run`) found or that were written to look like what it
//! finds: each must load to a config or to diagnostics, never panic, and every
//! diagnostic must render.

use std::path::Path;

#[test]
fn fuzz_regressions_load_or_explain() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        seen += 1;
        match herd_config::load_str(Path::new("/nonexistent-herd-fuzz/herd.toml"), text) {
            Ok(config) => {
                let _ = herd_config::shutdown_plan(&config);
            }
            Err(diags) => {
                assert!(!diags.is_empty(), "{}", path.display());
                assert!(!diags.to_string().is_empty(), "{}", path.display());
            }
        }
    }
    assert!(
        seen >= 4,
        "the regression inputs are missing from {}",
        dir.display()
    );
}
