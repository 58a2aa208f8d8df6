//! herd.toml text through the loader and validator, then what `herd plan` and
//! `herd check` do with a valid result. Includes name a directory that does not
//! exist, so nothing is read from disk.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match herd_config::load_str(Path::new("/nonexistent-herd-fuzz/herd.toml"), text) {
        Ok(config) => {
            let _ = herd_config::shutdown_plan(&config);
            let graph = herd_config::DepGraph::new(&config.services);
            let _ = graph.start_waves();
            let _ = graph.stop_waves();
        }
        // Rendering positions walks the text by byte offsets: exercise it.
        Err(diags) => {
            let _ = diags.to_string();
        }
    }
});
