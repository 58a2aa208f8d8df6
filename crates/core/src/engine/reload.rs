//! Applying a new configuration by difference (`herd reload`, SIGHUP).
//!
//! # How it works
//!
//! The new file is parsed and validated first; a configuration with errors
//! changes nothing. Then, service by service, against the configuration in force
//! (where a service is defined — file and line — does not count as a change):
//!
//! - **added**: becomes pending and starts as soon as what it requires is ready;
//! - **removed**: stopped (reason `reload`) after whatever requires it, and dropped
//!   once every process of it is gone;
//! - **changed** and running: restarted like `herd restart` — what requires it
//!   stops first and comes back after it — with the new definition, applied while
//!   it is down; changed but not running (pending, stopped, exited, failed): takes
//!   the new definition and stays as it was;
//! - **untouched**: keeps running, same processes.
//!
//! The shutdown plan (waves, budget) and `main` follow the new file at once.
//! Settings that shape herder itself — the socket, the state directory, the
//! containment backend, log rotation — take effect at the next `herd up`, and the
//! reload says so. One reload is applied at a time: a second one is refused while
//! services of the first are still being replaced or removed.

pub use herd_api::ReloadPlan;

use std::sync::Arc;

use herd_config::{Config, Service};

use super::control::ControlError;
use super::events::{self, Change};
use super::orchestrate;
use super::service::Svc;
use super::{Engine, Msg, shutdown};
use crate::log::note;
use crate::machine::StopReason;

/// The same service, wherever it is defined.
fn same(a: &Service, b: &Service) -> bool {
    let mut b = b.clone();
    b.defined_in.clone_from(&a.defined_in);
    b.line = a.line;
    *a == b
}

/// What would change from `old` to `new`, without the running state.
pub(super) fn diff(old: &Config, new: &Config) -> ReloadPlan {
    let mut plan = ReloadPlan {
        added: new
            .services
            .keys()
            .filter(|n| !old.services.contains_key(*n))
            .cloned()
            .collect(),
        removed: old
            .services
            .keys()
            .filter(|n| !new.services.contains_key(*n))
            .cloned()
            .collect(),
        changed: new
            .services
            .iter()
            .filter(|(n, c)| old.services.get(*n).is_some_and(|o| !same(o, c)))
            .map(|(n, _)| n.clone())
            .collect(),
        ..ReloadPlan::default()
    };
    if old.supervisor != new.supervisor {
        plan.notes
            .push("[supervisor] changed: it takes effect at the next herd up".into());
    }
    if old.logs != new.logs {
        plan.notes
            .push("[logs] changed: it takes effect at the next herd up".into());
    }
    plan
}

impl Engine {
    /// Loads and validates the configuration file again, then applies it.
    pub(super) fn reload_file(&mut self, why: &str) -> Result<ReloadPlan, ControlError> {
        let Some(file) = self.opts.config_file.clone() else {
            return Err(ControlError::NoConfigFile);
        };
        let new = herd_config::load(&file).map_err(|diags| ControlError::InvalidConfig {
            file: file.display().to_string(),
            errors: diags.to_string().trim_end().to_string(),
        })?;
        self.reload(new, why)
    }

    /// Applies `new` by difference (see the module docs).
    pub(super) fn reload(&mut self, new: Config, why: &str) -> Result<ReloadPlan, ControlError> {
        if self.shutdown.is_some() {
            return Err(ControlError::ShuttingDown(": nothing is reloaded".into()));
        }
        let busy: Vec<&str> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.intent.reloading())
            .map(|(n, _)| n.as_str())
            .collect();
        if !busy.is_empty() {
            return Err(ControlError::ReloadBusy(busy.join(", ")));
        }
        let mut plan = diff(&self.config_in_force(), &new);
        // The definitions the services take from now on, shared with
        // `self.services` once applied.
        let services = super::shared(&new.services);
        // A limit the backend cannot apply is said, as at start (cgroup v1
        // hierarchies are taken at start only for the limits then in use).
        for name in plan.added.iter().chain(&plan.changed) {
            for why in self
                .backend
                .unsupported(&super::service::limits(&services[name]))
            {
                note(&format!("warning: services.{name}.{why}; not honoured"));
            }
        }
        for name in plan.changed.clone() {
            self.change(&name, services[&name].clone(), &mut plan);
        }
        for name in &plan.removed {
            let svc = self.svcs.get_mut(name).expect("removed services exist");
            svc.intent.remove = true;
            svc.intent.rejoin = false;
            if !orchestrate::gone_or_stuck(svc) {
                self.stop_for_reload(name);
            }
        }
        // Where an untouched service is defined may have moved.
        for (name, cfg) in &services {
            if let Some(svc) = self.svcs.get_mut(name)
                && svc.intent.replace.is_none()
                && same(&svc.cfg, cfg)
            {
                svc.cfg = cfg.clone();
            }
        }
        for name in &plan.added {
            let mut svc = Svc::new(services[name].clone(), 0);
            listen_or_say(&mut svc, name, &self.tx);
            self.svcs.insert(name.clone(), svc);
        }
        plan.restarted.sort();
        plan.restarted.dedup();
        plan.restarted.retain(|n| !plan.removed.contains(n));
        self.plan = herd_config::shutdown_plan(&new);
        shutdown::assign_waves(&self.plan, &mut self.svcs);
        // A removed service still stopping goes in the first wave, should a
        // shutdown begin before it is gone.
        for name in &plan.removed {
            if let Some(svc) = self.svcs.get_mut(name) {
                svc.stop_wave = 0;
            }
        }
        self.main = new.main.clone();
        self.config = super::without_services(&new);
        self.services = services;
        self.say_reload(why, &plan);
        self.state_dirty = true;
        Ok(plan)
    }

    /// A changed service that runs is restarted, with what requires it; one that
    /// does not takes its new definition now (see [`orchestrate::on_change`]).
    fn change(&mut self, name: &str, cfg: Arc<Service>, plan: &mut ReloadPlan) {
        let svc = self.svcs.get_mut(name).expect("changed services exist");
        match orchestrate::on_change(svc) {
            orchestrate::Change::ReplaceWhenDown => svc.intent.replace = Some(cfg),
            orchestrate::Change::Restart => {
                svc.intent.replace = Some(cfg);
                match self.stop_request(name, true, StopReason::Reload) {
                    Ok(stopped) => plan.restarted.extend(stopped),
                    // Already going down as a dependent of another changed one.
                    Err(ControlError::AlreadyStopping(_)) => {}
                    Err(e) => note(&format!("reload: {e}")),
                }
            }
            orchestrate::Change::Redefine => svc.redefine(cfg),
        }
    }

    fn stop_for_reload(&mut self, name: &str) {
        match self.stop_request(name, false, StopReason::Reload) {
            Ok(_) | Err(ControlError::AlreadyStopping(_)) => {}
            Err(e) => note(&format!("reload: {e}")),
        }
    }

    fn say_reload(&self, why: &str, plan: &ReloadPlan) {
        note(&format!("{why}: reloading ({})", plan.summary()));
        if !plan.restarted.is_empty() {
            note(&format!("{why}: restarting {}", plan.restarted.join(", ")));
        }
        for n in &plan.notes {
            note(&format!("{why}: {n}"));
        }
        for cut in herd_config::plan::cut_timeouts(&self.plan) {
            note(&format!("{why}: warning: {cut}"));
        }
        self.publish(Change::Reload {
            at_ms: events::now_ms(),
            added: plan.added.clone(),
            removed: plan.removed.clone(),
            changed: plan.changed.clone(),
        });
    }

    /// Services a reload changed or removed that are now down take their new
    /// definition, or are dropped. Called on every settle of the loop.
    pub(super) fn apply_replacements(&mut self) {
        let down: Vec<String> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.intent.reloading() && orchestrate::down(*s))
            .filter(|(n, _)| {
                !self.checks.values().any(|c| &c.name == *n)
                    && !self.hooks.values().any(|h| h == *n)
            })
            .filter(|(n, _)| !self.stop_queue.iter().any(|q| q.name == **n))
            .map(|(n, _)| n.clone())
            .collect();
        for name in down {
            let svc = self.svcs.get_mut(&name).expect("listed above");
            if svc.intent.remove {
                self.svcs.remove(&name);
                self.timers
                    .retain(|(_, t)| t.service() != Some(name.as_str()));
                note(&format!("{name} removed"));
                continue;
            }
            if let Some(cfg) = svc.intent.replace.take() {
                svc.redefine(cfg);
                listen_or_say(svc, &name, &self.tx);
            }
        }
    }
}

/// Opens the service's notify socket if it needs one; a failure is said, and the
/// service runs without (readiness by notify then times out, and says why).
fn listen_or_say(svc: &mut Svc, name: &str, tx: &tokio::sync::mpsc::UnboundedSender<Msg>) {
    if let Err(e) = svc.listen(name, tx) {
        note(&format!(
            "{name}: cannot open its notify socket ({e}); its notifications will not be heard"
        ));
    }
}
