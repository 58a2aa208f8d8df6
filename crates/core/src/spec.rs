//! From a service's configuration to what [`herd_sys::spawn()`] runs.
//!
//! The environment is herder's own, then `env_file`, then `env` (later wins): a
//! container's variables reach its services, as with foreman or process-compose.
//! `HERD_SERVICE` names the service; `NOTIFY_SOCKET` is set for services that speak
//! sd_notify.

use std::path::Path;

use herd_config::Service;
use herd_sys::spawn::{Credentials, Rlimit, Spec};

/// The spec for the service's command; `extra` variables come last (`NOTIFY_SOCKET`).
pub fn build(cfg: &Service, extra: &[(String, String)]) -> Result<Spec, String> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Some(f) = &cfg.env_file {
        for (k, v) in read_env_file(f)? {
            set(&mut env, k, v);
        }
    }
    for (k, v) in &cfg.env {
        set(&mut env, k.clone(), v.clone());
    }
    set(&mut env, "HERD_SERVICE".into(), cfg.name.clone());
    for (k, v) in extra {
        set(&mut env, k.clone(), v.clone());
    }
    let credentials = match (&cfg.user, &cfg.group) {
        (Some(u), g) => {
            Some(herd_sys::user::credentials(u, g.as_deref()).map_err(|e| e.to_string())?)
        }
        (None, Some(g)) => {
            let gid = herd_sys::user::group_only(g).map_err(|e| e.to_string())?;
            Some(Credentials {
                uid: herd_sys::user::current_uid(),
                gid,
                groups: vec![gid],
            })
        }
        (None, None) => None,
    };
    let mut rlimits = Vec::new();
    let l = &cfg.limits;
    for (r, v) in [
        (Rlimit::Nofile, l.nofile),
        (Rlimit::Nproc, l.nproc),
        (Rlimit::Core, l.core),
    ] {
        if let Some(v) = v {
            rlimits.push((r, v));
        }
    }
    Ok(Spec {
        argv: crate::engine::argv(cfg),
        env,
        workdir: cfg.workdir.clone(),
        credentials,
        rlimits,
        discard_output: false,
        merge_output: true,
        cgroups: Vec::new(),
        inherit: Vec::new(),
        pid_env: Vec::new(),
    })
}

fn set(env: &mut Vec<(String, String)>, k: String, v: String) {
    match env.iter_mut().find(|(key, _)| *key == k) {
        Some(slot) => slot.1 = v,
        None => env.push((k, v)),
    }
}

/// `KEY=value` lines; blank lines and `#` comments skipped, an `export ` prefix and
/// one pair of matching quotes around the value removed.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=value", i + 1));
        };
        let v = v.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
            .unwrap_or(v);
        out.push((k.trim().to_string(), unquoted.to_string()));
    }
    Ok(out)
}

fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("env_file {}: {}", path.display(), e.kind()))?;
    parse_env_file(&text).map_err(|e| format!("env_file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files() {
        let text = "# c\n\nA=1\nexport B = \"two words\"\nC='x'\nD=\n";
        assert_eq!(
            parse_env_file(text).unwrap(),
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x".into()),
                ("D".into(), String::new())
            ]
        );
        assert_eq!(
            parse_env_file("oops\n").unwrap_err(),
            "line 1: expected KEY=value"
        );
    }
}
