//! `herd top`: a live view of a running herder, and of its shutdown as it
//! happens.
//!
//! # How it works
//!
//! A client of the control socket like any other (the protocol crate, never
//! the engine). One snapshot of the services (`GET /v1/services`) to begin;
//! then the event stream (`GET /v1/events`) drives it: each change is shown
//! and answered with a new snapshot. The selected service's log is followed
//! (`…/logs?follow=true`). Nothing is polled while nothing changes, but the
//! resource figures (CPU%, memory), which have no events, are read again
//! every [`CALM_REFRESH`] while the view is open; while something is
//! stopping, every [`LIVELY_REFRESH`], for its countdown and the processes
//! its stop waits on.
//!
//! The [`model`] holds what is known and decides what a key does; the
//! [`view`] draws it with ratatui; [`feed`] talks to herder. Keys are read on
//! a thread of their own (crossterm's reads block) and reach the loop as
//! inputs, as do resizes.
//!
//! The terminal is restored on every way out: `q`, Ctrl-C (a key in raw
//! mode), SIGTERM or SIGHUP to `herd top`, herder going away, and a panic
//! (a hook restores it before the message).

mod feed;
mod model;
mod view;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use model::{Effect, Input, Model};

/// Resource figures are read again this often while the view is open.
const CALM_REFRESH: Duration = Duration::from_secs(2);
/// And this often while a stop counts down.
const LIVELY_REFRESH: Duration = Duration::from_millis(250);
/// Lines of a service's log shown when it is selected.
const LOG_TAIL: usize = 200;

pub fn run(sock: &Path) -> ExitCode {
    let rt = match super::ctl::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(top(sock.to_path_buf()))
}

async fn top(sock: PathBuf) -> ExitCode {
    // Asked before the terminal is taken: with no herder, a plain message.
    let (services, shutdown) = match feed::snapshot(&sock).await {
        Ok(s) => s,
        Err(e) => return super::ctl::fail(&e),
    };
    if !std::io::stdout().is_terminal() {
        return super::ctl::fail("herd top needs a terminal (herd ps prints the same once)");
    }
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            ratatui::restore();
            return super::ctl::fail(&format!("cannot use the terminal: {e}"));
        }
    };
    show_cursor_on_panic();
    let (tx, mut rx) = mpsc::unbounded_channel::<Input>();
    read_keys(tx.clone());
    tokio::spawn(feed::events(sock.clone(), tx.clone()));
    let theme = view::Theme::from_env();
    let mut model = Model::new(services, shutdown);
    let mut follows: Vec<JoinHandle<()>> = Vec::new();
    let mut fetching = false;
    let mut fetch_again = false;
    let mut last_fetch = Instant::now();
    let mut pending = model.start();
    let mut quit = false;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    while !quit {
        for effect in pending.drain(..) {
            match effect {
                Effect::Quit => quit = true,
                Effect::Fetch if fetching => fetch_again = true,
                Effect::Fetch => {
                    fetching = true;
                    last_fetch = Instant::now();
                    tokio::spawn(feed::fetch(sock.clone(), tx.clone()));
                }
                Effect::Act { verb, name } => {
                    let path = format!("/v1/services/{name}/{verb}");
                    tokio::spawn(feed::act(sock.clone(), path, tx.clone()));
                }
                Effect::Signal { name, signal, all } => {
                    let all = if all { "&all=true" } else { "" };
                    let path = format!("/v1/services/{name}/signal?signal={signal}{all}");
                    tokio::spawn(feed::act(sock.clone(), path, tx.clone()));
                }
                Effect::Follow { stream, services } => {
                    for f in follows.drain(..) {
                        f.abort();
                    }
                    let n = if services.len() > 1 { 20 } else { LOG_TAIL };
                    for s in services {
                        follows.push(tokio::spawn(feed::log(
                            sock.clone(),
                            s,
                            n,
                            stream,
                            tx.clone(),
                        )));
                    }
                }
            }
        }
        if quit {
            break;
        }
        if let Err(e) = terminal.draw(|f| view::draw(f, &model, theme, Instant::now())) {
            model.gone = Some(format!("cannot draw: {e}"));
            break;
        }
        let every = if model.lively() {
            LIVELY_REFRESH
        } else {
            CALM_REFRESH
        };
        // A countdown is redrawn ten times a second; a calm view only when
        // something comes, or its figures are due.
        let wake = if model.lively() {
            Duration::from_millis(100)
        } else {
            every.saturating_sub(last_fetch.elapsed())
        };
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { break };
                if matches!(input, Input::Snapshot { .. } | Input::NoSnapshot(_)) {
                    fetching = false;
                    if std::mem::take(&mut fetch_again) {
                        pending.push(Effect::Fetch);
                    }
                }
                pending.extend(model.apply(input));
                // Take what else has come before drawing again.
                while let Ok(more) = rx.try_recv() {
                    if matches!(more, Input::Snapshot { .. } | Input::NoSnapshot(_)) {
                        fetching = false;
                    }
                    pending.extend(model.apply(more));
                }
            }
            () = tokio::time::sleep(wake) => {
                if last_fetch.elapsed() >= every && model.finished.is_none() {
                    pending.push(Effect::Fetch);
                }
            }
            Some(()) = recv(&mut term) => quit = true,
            Some(()) = recv(&mut hup) => quit = true,
        }
    }
    drop(terminal);
    ratatui::restore();
    let _ = ratatui::crossterm::execute!(std::io::stdout(), ratatui::crossterm::cursor::Show);
    // The view of the report goes with the alternate screen: it stays here.
    if let Some((_, report)) = &model.finished {
        return crate::output::stdout(&report.table());
    }
    match model.gone {
        Some(why) => super::ctl::fail(&why),
        None => ExitCode::SUCCESS,
    }
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Keys and resizes, read on a thread of their own: crossterm's reads block.
fn read_keys(tx: mpsc::UnboundedSender<Input>) {
    std::thread::spawn(move || {
        loop {
            let input = match event::read() {
                Ok(Event::Key(k)) => Input::Key(k),
                Ok(Event::Resize(..)) => Input::Resize,
                Ok(_) => continue,
                Err(_) => return,
            };
            if tx.send(input).is_err() {
                return;
            }
        }
    });
}

/// ratatui's own hook leaves raw mode and the alternate screen on a panic;
/// the cursor it hid is shown again too.
fn show_cursor_on_panic() {
    let restore = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore(info);
        let _ = ratatui::crossterm::execute!(std::io::stderr(), ratatui::crossterm::cursor::Show);
    }));
}
