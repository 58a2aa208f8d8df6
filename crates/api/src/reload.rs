//! A reload (`POST /v1/reload`, `herd reload`): what it does, service by
//! service, and how each service it started or removed came out of it.

use serde::{Deserialize, Serialize};

/// What a reload does, service by service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadPlan {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Running services the reload stops and starts again: the changed ones and
    /// what requires them.
    pub restarted: Vec<String>,
    /// Settings of the new file that apply only at the next `herd up`.
    pub notes: Vec<String>,
}

impl ReloadPlan {
    /// The services the reload starts (added and restarted): wait on them to be up.
    pub fn starting(&self) -> impl Iterator<Item = &String> {
        self.added.iter().chain(&self.restarted)
    }

    /// `added: a; changed: b` or `no service changed`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (what, list) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed", &self.changed),
        ] {
            if !list.is_empty() {
                parts.push(format!("{what}: {}", list.join(", ")));
            }
        }
        if parts.is_empty() {
            "no service changed".into()
        } else {
            parts.join("; ")
        }
    }
}

/// The answer to a reload that was applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadAnswer {
    /// `reloaded (added: cache; changed: api)`.
    pub message: String,
    pub plan: ReloadPlan,
    pub results: Vec<ReloadResult>,
    /// Set (with status 409) when a service did not come up or go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How one service the reload started or removed came out of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadResult {
    pub service: String,
    pub ok: bool,
    pub message: String,
}
