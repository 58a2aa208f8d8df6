//! Set-up shared by the engine's test binaries (one engine per binary: an engine
//! reaps every child of its process).

use std::future::Future;
use std::path::Path;

use herd_core::engine::{Engine, Handle, Options, Outcome};

/// Writes `toml` as `dir`/herd.toml and runs an engine over it (none backend,
/// state in `dir`/.herd) alongside `test`, which is given its handle and should
/// end by asking for a shutdown; the engine's outcome once both are done.
pub fn run_engine<F, Fut>(dir: &Path, toml: &str, test: F) -> Outcome
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = ()>,
{
    let file = dir.join("herd.toml");
    std::fs::write(&file, toml).unwrap();
    let config = herd_config::load(&file).unwrap();
    let backend = Box::new(herd_contain::none::Tracking::open());
    let opts = Options {
        state_dir: dir.join(".herd"),
        ..Options::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine = Engine::new(&config, opts, backend).unwrap();
        let h = engine.handle();
        let (outcome, ()) = tokio::join!(engine.run(), test(h));
        outcome.unwrap()
    })
}
