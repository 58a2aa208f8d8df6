//! The backend without cgroups: a unit is a process tree, followed through /proc.
//!
//! # How it works
//!
//! The caller is a child subreaper, so every process a unit ever starts stays a
//! descendant of the caller: when a parent dies, its orphans are re-parented to the
//! caller, not to init. Each scan (`pids`, `signal`, `kill`, emptiness checks) reads
//! every /proc/PID/stat once and updates, for every unit, the set of its members,
//! each remembered as (pid, start time):
//!
//! 1. members already known and still alive, and everything descending from them
//!    (ancestry);
//! 2. processes re-parented to the caller that no unit knows (orphans) are
//!    attributed, in this order:
//!    - to the unit that has seen their session or process group leader (a pid
//!      is not reused while it names a live session or group; a unit forgets
//!      the ids no live process holds any more, which may be reused);
//!    - to the unit whose run id ([`Unit::set_invocation`], `HERD_INVOCATION`)
//!      is in the environment the orphan was exec'd with: fork, `setsid` and
//!      exec keep it, so this finds the double-forked daemon whose short-lived
//!      parent no scan saw. It is read once an orphan (again while it cannot
//!      be read), through a /proc/PID directory checked against the start
//!      time. An id that no unit has is a run that has ended, and the two
//!      guesses below are not made for it;
//!    - to the only unit that was running when the orphan was born (start times;
//!      units that have ended count too, so an old escapee is not pinned on a
//!      newer unit);
//!    - when the orphan is seen for the first time, to the only unit, among those
//!      running at its birth, that lost a member since the last scan: the classic
//!      daemon whose parent just exited.
//!
//!    What is left is a *stray* ([`Backend::strays`]), never guessed at: herder
//!    kills strays at the end of every shutdown.
//!
//! Signals go through a pidfd opened first and then checked against the remembered
//! start time: a recycled pid has another start time, so it is never signalled.
//! The main process is signalled first, then the others oldest first, so a stop
//! reports the main process's signal, not an exit it made on seeing its
//! children die.
//! SIGKILL goes round after round until a scan finds no process it has not already
//! killed, which catches children forked between a scan and the signals.
//!
//! **Batches** keep a supervisor of many services linear: between
//! [`Backend::begin_batch`] and [`Backend::end_batch`] (herder's batch is one
//! wake-up of its loop) every unit answers from one shared scan, taken when the
//! first question comes, and SIGKILL's later rounds run once for every unit
//! killed in the batch, at its end. A shared scan never calls a unit empty that
//! is not: a process forked after it descends from one the scan saw alive, or
//! was [`Unit::started`]. Reaping makes it stale, as a unit may have emptied:
//! the caller says so with [`Backend::refresh`]. Outside a batch each question
//! scans, as an embedder without a loop expects.
//!
//! # What it cannot guarantee
//!
//! - A process whose intermediate parent lived and died between two scans, with its
//!   own new session, while several units had live processes, is attributed only
//!   by its environment. One that cleared or replaced `HERD_INVOCATION` (`env -i`,
//!   a daemon that builds its own environment), or whose environment herder may
//!   not read (a non-dumpable process when herder is not root), is a stray until
//!   the shutdown's end, so a single service's stop or restart misses it.
//! - Reading an orphan's environment takes that process's memory-map lock: an
//!   orphan stuck in the kernel while holding it would hold up the scan.
//! - If the caller cannot be a subreaper, orphans go to init and are out of reach.
//! - A scan reads all of /proc: its cost grows with the number of processes on the
//!   machine (about 1 ms per few hundred).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use herd_sys::Pidfd;

use crate::procfs::{self, Stat};
use crate::{Backend, Containment, Limits, Unit};

/// The backend; its units share one tracker, since attributing an orphan needs to
/// know every unit, and a batch shares its scans.
#[derive(Debug, Clone)]
pub struct Tracking {
    tracker: Arc<Mutex<Tracker>>,
}

#[derive(Debug, Default)]
struct Tracker {
    me: i32,
    next_id: u64,
    units: HashMap<u64, Track>,
    strays: HashMap<i32, Stray>,
    /// Lifetimes (start, end, in clock ticks since boot) of units that are gone,
    /// the last [`MAX_ENDED`]: 64 KiB once full, which a herder restarting
    /// services all day reaches and then keeps (its memory grows until then).
    ended: VecDeque<(u64, u64)>,
    /// Inside a batch: scans are shared until it ends or is refreshed.
    batch: bool,
    /// Inside a batch, the last scan still stands.
    fresh: bool,
    /// Units SIGKILLed in this batch, with what they have been sent it: the
    /// later rounds run at the batch's end, for all of them at once.
    killing: HashMap<u64, HashSet<(i32, u64)>>,
    /// Walks of /proc so far.
    scans: u64,
    /// Reap orphans once they exit ([`Tracking::reaping`]).
    reap_orphans: bool,
    /// Members the last scan saw, but main processes, pid -> start time,
    /// while reaping orphans.
    adopted: HashMap<i32, u64>,
    /// Units between [`Unit::join`] and [`Unit::started`], while reaping
    /// orphans: a child of the caller that no unit knows may be one of
    /// theirs, not yet an orphan, so no unit is guessed for it meanwhile (a
    /// caller spawning on one thread while another scans).
    spawning: usize,
}

#[derive(Debug, Default)]
struct Track {
    /// Live members: pid -> start time.
    members: HashMap<i32, u64>,
    /// Every pid, session and group id seen in this unit (for orphans).
    seen: HashSet<i32>,
    /// The start time of its first process.
    born: Option<u64>,
    /// The process the unit was started with.
    main: Option<i32>,
    /// The run's `HERD_INVOCATION`, in the environment of all its processes.
    invocation: Option<String>,
    /// Counted in [`Tracker::spawning`].
    spawning: bool,
}

/// A re-parented process no unit has claimed.
#[derive(Debug)]
struct Stray {
    start: u64,
    /// Its `HERD_INVOCATION` (or that it has none), once its environment could
    /// be read.
    invocation: Option<Option<String>>,
}

const MAX_ENDED: usize = 4096;

/// Clock ticks since boot, the unit of /proc start times.
fn now_ticks() -> u64 {
    let up = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = up
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    (secs * rustix::param::clock_ticks_per_second() as f64) as u64 + 1
}

pub(crate) fn probe() -> Result<String, String> {
    Ok("process trees tracked through /proc; herder as child subreaper".into())
}

impl Tracking {
    pub fn open() -> Tracking {
        Tracking {
            tracker: Arc::new(Mutex::new(Tracker {
                me: std::process::id() as i32,
                ..Tracker::default()
            })),
        }
    }

    /// [`Tracking::open`] for a caller with no reaper of its own (an embedder
    /// through [`crate::Jobs`]): a unit's processes re-parented to the caller
    /// are reaped by the scan that finds them exited, through a pidfd so that
    /// only that process is reaped. A unit's main process (the first
    /// [`Unit::started`]) is not: its starter reaps it; a caller that starts
    /// more into a unit (hooks) reaps everything itself, as herder does, and
    /// does not use this. A stray is never reaped (it may be the caller's
    /// own): one that exits stays a zombie until the caller reaps it.
    ///
    /// There is one such tracker in a process, shared by every caller of
    /// this: orphans all come to the one process, and trackers that did not
    /// know each other's units would take each other's processes for orphans.
    pub fn reaping() -> Tracking {
        static SHARED: std::sync::OnceLock<Tracking> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| {
                let t = Tracking::open();
                t.lock().reap_orphans = true;
                t
            })
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for Tracking {
    fn kind(&self) -> Containment {
        Containment::None
    }

    fn location(&self) -> Option<&Path> {
        None
    }

    fn create(&self, _name: &str, _limits: &Limits) -> io::Result<Box<dyn Unit>> {
        let mut t = self.lock();
        t.next_id += 1;
        let id = t.next_id;
        t.units.insert(id, Track::default());
        Ok(Box::new(TreeUnit {
            id,
            tracking: self.clone(),
        }))
    }

    fn unsupported(&self, limits: &Limits) -> Vec<String> {
        crate::tree::wanted(limits)
            .into_iter()
            .map(|c| format!("limits.{c}: needs a cgroup; the none backend has none"))
            .collect()
    }

    fn strays(&self) -> Vec<i32> {
        let mut t = self.lock();
        t.look();
        t.strays.keys().copied().collect()
    }

    fn begin_batch(&self) {
        let mut t = self.lock();
        t.batch = true;
        t.fresh = false;
    }

    fn refresh(&self) {
        self.lock().fresh = false;
    }

    fn end_batch(&self) {
        let mut t = self.lock();
        t.kill_rounds();
        t.batch = false;
        t.fresh = false;
    }
}

impl Tracker {
    /// Brings the units' members up to date: the batch's scan if it still
    /// stands, a new one otherwise.
    fn look(&mut self) {
        if !(self.batch && self.fresh) {
            self.scan();
            self.fresh = self.batch;
        }
    }

    /// SIGKILL round after round, with a new scan each, for every unit killed
    /// in this batch, until no scan finds a process not sent it.
    fn kill_rounds(&mut self) {
        // Bounded: a fork bomb is caught by its limits, not by endless rounds.
        for _ in 0..1_000 {
            if self.killing.is_empty() {
                return;
            }
            self.scan();
            let mut fresh = 0;
            for (id, done) in &mut self.killing {
                let Some(track) = self.units.get(id) else {
                    continue;
                };
                for (&pid, &start) in &track.members {
                    if done.insert((pid, start)) {
                        fresh += 1;
                        if let Some(fd) = TreeUnit::verified(pid, start) {
                            let _ = fd.signal(libc::SIGKILL);
                        }
                    }
                }
            }
            if fresh == 0 {
                break;
            }
        }
        self.killing.clear();
    }

    /// One pass over /proc, updating every unit's members (see the module docs).
    fn scan(&mut self) {
        self.scans += 1;
        let stats = procfs::all();
        // Zombies included: an orphan that died stays to be reaped.
        let mut present = HashMap::new();
        if self.reap_orphans {
            self.reap(&stats);
            present = stats.iter().map(|s| (s.pid, s.starttime)).collect();
        }
        let all: HashMap<i32, Stat> = stats
            .into_iter()
            .filter(Stat::alive)
            .map(|s| (s.pid, s))
            .collect();
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for s in all.values() {
            children.entry(s.ppid).or_default().push(s.pid);
        }
        let (lost, mut owner) = self.forget_gone(&all);

        // Orphans: the caller's children that no unit knows.
        let mut orphans: Vec<i32> = children
            .get(&self.me)
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| !owner.contains_key(p))
            .collect();
        orphans.sort_unstable();
        for pid in orphans {
            let s = all[&pid];
            match self.claim(&s, &lost) {
                (Some(id), _) => {
                    self.strays.remove(&pid);
                    let track = self.units.get_mut(&id).expect("known unit");
                    track.members.insert(pid, s.starttime);
                    owner.insert(pid, id);
                }
                (None, invocation) => {
                    let start = s.starttime;
                    self.strays.insert(pid, Stray { start, invocation });
                }
            }
        }
        self.descend(&all, &children, &mut owner);
        if self.reap_orphans {
            self.adopt(&present);
        }
    }

    /// Reaps the orphans of units that have exited: the caller's children, by
    /// now, that the last scan knew as members and that are no unit's main
    /// process. Nothing else: the caller's other children, and processes of
    /// other trackers in the same caller, are not members.
    fn reap(&mut self, stats: &[Stat]) {
        for s in stats.iter().filter(|s| !s.alive() && s.ppid == self.me) {
            if self.adopted.get(&s.pid) == Some(&s.starttime)
                // The pidfd pins the zombie: checked once more through it, it
                // cannot be a process that took the pid since.
                && let Ok(fd) = Pidfd::open(s.pid)
                && procfs::stat(s.pid).is_some_and(|now| now.starttime == s.starttime)
            {
                fd.reap();
            }
        }
    }

    /// What the next scans may reap: every member but the main processes (and
    /// a unit's being spawned, whose main is not known yet), and what they
    /// could reap before that is still there, alive or dead: a member that
    /// died as the child of another, which dies next, becomes the caller's
    /// zombie only then, after its unit may have emptied.
    fn adopt(&mut self, present: &HashMap<i32, u64>) {
        self.adopted
            .retain(|pid, start| present.get(pid) == Some(start));
        let members = self
            .units
            .values()
            .filter(|t| !t.spawning)
            .flat_map(|t| t.members.iter().filter(|(p, _)| Some(**p) != t.main))
            .map(|(&p, &start)| (p, start));
        self.adopted.extend(members);
    }

    /// Drops members and strays that are gone, and ids no live process holds;
    /// the units that lost a member, and every live member's unit.
    fn forget_gone(&mut self, all: &HashMap<i32, Stat>) -> (Vec<u64>, HashMap<i32, u64>) {
        let same = |pid: i32, start: u64| all.get(&pid).is_some_and(|s| s.starttime == start);
        // An id no live process holds as its pid, session or group may be given
        // to another process from now on, so what a unit saw of it no longer
        // tells where an orphan in that session comes from. Forgetting it also
        // bounds `seen` for a service that forks for ever (a shell loop).
        let live: HashSet<i32> = all.values().flat_map(|s| [s.pid, s.sid, s.pgid]).collect();
        let mut lost = Vec::new();
        let mut owner: HashMap<i32, u64> = HashMap::new();
        for (&id, track) in &mut self.units {
            track.seen.retain(|i| live.contains(i));
            let before = track.members.len();
            track.members.retain(|&p, &mut st| same(p, st));
            if track.members.len() < before {
                lost.push(id);
            }
            for &p in track.members.keys() {
                owner.insert(p, id);
            }
        }
        self.strays.retain(|&p, st| same(p, st.start));
        (lost, owner)
    }

    /// The unit an orphan `s` belongs to, if one can be told; with what its
    /// environment said of its run, if it was read.
    fn claim(&self, s: &Stat, lost: &[u64]) -> (Option<u64>, Option<Option<String>>) {
        let pid = s.pid;
        let new = !self.strays.contains_key(&pid);
        let only = |ids: &[u64]| (ids.len() == 1).then(|| ids[0]);
        let units = |keep: &dyn Fn(&Track) -> bool| -> Vec<u64> {
            self.units
                .iter()
                .filter(|(_, t)| keep(t))
                .map(|(&id, _)| id)
                .collect()
        };
        let by_session = units(&|t| t.seen.contains(&s.sid) || t.seen.contains(&s.pgid));
        // Read only when its session does not tell, and once an orphan (the
        // environment is the one it was exec'd with); read again while it
        // cannot be (an exec under way reads empty).
        let read = if only(&by_session).is_some() {
            None
        } else {
            let known = self.strays.get(&pid).and_then(|st| st.invocation.clone());
            known.or_else(|| procfs::invocation(pid, s.starttime))
        };
        let invocation = read.clone().flatten();
        let by_invocation = units(&|t| invocation.is_some() && t.invocation == invocation);
        // Units running when it was born; ended ones only count.
        let running = units(&|t| t.born.is_some_and(|b| b <= s.starttime));
        let ended = self
            .ended
            .iter()
            .filter(|&&(b, e)| b <= s.starttime && s.starttime <= e)
            .count();
        let lost_running: Vec<u64> = lost
            .iter()
            .copied()
            .filter(|id| running.contains(id))
            .collect();
        // A run id that no unit has is a run that has ended: the guesses from
        // timing would pin its escapee on a unit it is not part of.
        let guess = invocation.is_none() && self.spawning == 0;
        let unit = only(&by_session)
            .or_else(|| only(&by_invocation))
            .or_else(|| only(&running).filter(|_| ended == 0 && guess))
            .or_else(|| only(&lost_running).filter(|_| new && guess));
        (unit, read)
    }

    /// Everything below a member is a member (ancestry).
    fn descend(
        &mut self,
        all: &HashMap<i32, Stat>,
        children: &HashMap<i32, Vec<i32>>,
        owner: &mut HashMap<i32, u64>,
    ) {
        for (&id, track) in &mut self.units {
            let mut todo: Vec<i32> = track.members.keys().copied().collect();
            while let Some(p) = todo.pop() {
                let Some(s) = all.get(&p) else { continue };
                track.seen.extend([s.pid, s.sid, s.pgid]);
                for &c in children.get(&p).into_iter().flatten() {
                    if owner.get(&c).is_none_or(|&o| o == id) && !track.members.contains_key(&c) {
                        track.members.insert(c, all[&c].starttime);
                        owner.insert(c, id);
                        todo.push(c);
                    }
                }
            }
        }
    }
}

/// One unit of the none backend.
#[derive(Debug)]
pub struct TreeUnit {
    id: u64,
    tracking: Tracking,
}

impl TreeUnit {
    /// The unit's processes, the main process first, then oldest first, so
    /// signals mostly reach a parent before the children it forked (start times
    /// are clock ticks, so ties are common). The main process must come first:
    /// signalled after its children, a main process waiting on them (a shell's
    /// `wait`) could see them die and exit 0 before its own SIGKILL came, and
    /// the stop would report an exit where there was a kill.
    fn members(&self) -> Vec<(i32, u64)> {
        let mut t = self.tracking.lock();
        t.look();
        t.units
            .get(&self.id)
            .map(|u| signal_order(&u.members, u.main))
            .unwrap_or_default()
    }

    /// A pidfd for `pid` if it is still the process with start time `start`.
    fn verified(pid: i32, start: u64) -> Option<Pidfd> {
        let fd = Pidfd::open(pid).ok()?;
        procfs::stat(pid)
            .filter(|s| s.starttime == start && s.alive())
            .map(|_| fd)
    }
}

impl Unit for TreeUnit {
    fn join(&self) -> io::Result<Vec<Arc<OwnedFd>>> {
        let mut t = self.tracking.lock();
        // Only an embedder spawns on one thread while another scans; herder's
        // one loop does neither during the other.
        if t.reap_orphans
            && let Some(u) = t.units.get_mut(&self.id)
            && !std::mem::replace(&mut u.spawning, true)
        {
            t.spawning += 1;
        }
        Ok(Vec::new())
    }

    fn started(&mut self, pid: i32) {
        // The caller's own child, not yet reaped: its pid is still its own.
        if let Some(s) = procfs::stat(pid) {
            let mut t = self.tracking.lock();
            if let Some(u) = t.units.get_mut(&self.id) {
                u.members.insert(pid, s.starttime);
                u.seen.extend([s.pid, s.sid, s.pgid]);
                u.born.get_or_insert(s.starttime);
                // The first is the main process; hooks and checks come later.
                u.main.get_or_insert(pid);
                if std::mem::take(&mut u.spawning) {
                    t.spawning -= 1;
                }
            }
        }
    }

    fn set_invocation(&mut self, invocation: &str) {
        if let Some(u) = self.tracking.lock().units.get_mut(&self.id) {
            u.invocation = Some(invocation.to_string());
        }
    }

    fn events(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn pids(&mut self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.members().into_iter().map(|(p, _)| p).collect();
        pids.sort_unstable();
        pids
    }

    fn owns(&mut self, pid: i32) -> bool {
        let start = procfs::stat(pid).map(|s| s.starttime);
        let mut t = self.tracking.lock();
        let known = |t: &Tracker| {
            t.units
                .get(&self.id)
                .and_then(|u| u.members.get(&pid))
                .is_some_and(|&s| Some(s) == start)
        };
        // A process forked since the last scan is not known yet: look again.
        known(&t) || {
            t.scan();
            t.fresh = t.batch;
            known(&t)
        }
    }

    fn signal(&mut self, signal: i32) -> io::Result<usize> {
        self.signals(&[signal])
    }

    fn signals(&mut self, signals: &[i32]) -> io::Result<usize> {
        let mut sent = crate::Sent::default();
        for (pid, start) in self.members() {
            if let Some(fd) = Self::verified(pid, start) {
                sent.send(&fd, signals);
            }
        }
        sent.result()
    }

    fn kill(&mut self) -> io::Result<()> {
        let mut done: HashSet<(i32, u64)> = HashSet::new();
        // Bounded: a fork bomb is caught by its limits, not by endless rounds.
        for _ in 0..1_000 {
            let fresh: Vec<(i32, u64)> = self
                .members()
                .into_iter()
                .filter(|m| !done.contains(m))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for (pid, start) in fresh {
                if let Some(fd) = Self::verified(pid, start) {
                    fd.signal(libc::SIGKILL)?;
                }
                done.insert((pid, start));
            }
            let mut t = self.tracking.lock();
            if t.batch {
                // The next rounds at the batch's end, shared with every other
                // unit killed in it.
                t.killing.entry(self.id).or_default().extend(done);
                break;
            }
            // Outside a batch every round scans anew.
        }
        Ok(())
    }

    fn remove(&mut self) -> io::Result<()> {
        self.tracking.lock().end(self.id);
        Ok(())
    }
}

impl Drop for TreeUnit {
    fn drop(&mut self) {
        self.tracking.lock().end(self.id);
    }
}

impl Tracker {
    /// Forgets a unit, keeping its lifetime for attributing old orphans.
    fn end(&mut self, id: u64) {
        let Some(track) = self.units.remove(&id) else {
            return;
        };
        if track.spawning {
            self.spawning -= 1;
        }
        if let Some(born) = track.born {
            // Bounded for crash loops that run for days; the oldest matter least.
            if self.ended.len() >= MAX_ENDED {
                self.ended.pop_front();
            }
            self.ended.push_back((born, now_ticks()));
        }
    }
}

/// The order signals go in; see [`TreeUnit::members`].
fn signal_order(members: &HashMap<i32, u64>, main: Option<i32>) -> Vec<(i32, u64)> {
    let mut order: Vec<(i32, u64)> = members.iter().map(|(&p, &s)| (p, s)).collect();
    order.sort_unstable_by_key(|&(pid, start)| (Some(pid) != main, start, pid));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    // A test here must not spawn processes for a tracker: it takes the test
    // process's other children (other tests') for orphans of its units.

    #[test]
    fn a_scan_forgets_ids_no_live_process_holds() {
        // Above any pid_max: no process can hold it, or have it as its parent.
        let gone = i32::MAX;
        // The tracker's caller is a pid no process has for parent, so the scan
        // finds no orphans: the test process's children (other tests') share its
        // session and could otherwise be attributed, and their ids seen.
        let mut t = Tracker {
            me: gone - 1,
            ..Tracker::default()
        };
        let live = std::process::id() as i32;
        t.units.insert(
            1,
            Track {
                seen: HashSet::from([live, gone]),
                ..Track::default()
            },
        );
        t.scan();
        assert_eq!(t.units[&1].seen, HashSet::from([live]));
    }

    #[test]
    fn a_batch_shares_one_scan_until_processes_are_reaped() {
        // As above: a caller no process has for parent.
        let tracking = Tracking {
            tracker: Arc::new(Mutex::new(Tracker {
                me: i32::MAX - 1,
                ..Tracker::default()
            })),
        };
        let scans = || tracking.lock().scans;
        let mut units: Vec<_> = (0..100)
            .map(|i| {
                tracking
                    .create(&format!("s{i}"), &Limits::default())
                    .unwrap()
            })
            .collect();
        // Outside a batch, every question looks again.
        units[0].pids();
        units[1].pids();
        assert_eq!(scans(), 2);
        tracking.begin_batch();
        for u in &mut units {
            assert!(u.is_empty());
            u.signal(libc::SIGTERM).unwrap();
            u.kill().unwrap();
        }
        tracking.strays();
        assert_eq!(scans(), 3, "one scan for the whole batch");
        tracking.refresh();
        units[0].pids();
        units[1].pids();
        assert_eq!(scans(), 4, "reaping makes the batch look once more");
        tracking.end_batch();
        units[0].pids();
        assert_eq!(scans(), 5, "after the batch, every question looks again");
    }

    #[test]
    fn the_first_process_started_stays_the_main_one() {
        // No scan runs here: `started` only reads the given pids' stat.
        let tracking = Tracking::open();
        let mut unit = tracking.create("t", &Limits::default()).unwrap();
        let me = std::process::id() as i32;
        unit.started(me);
        // A stop hook or a readiness check, started into the unit later.
        unit.started(1);
        let main = tracking.lock().units.values().next().and_then(|u| u.main);
        assert_eq!(main, Some(me));
    }

    #[test]
    fn the_main_process_is_signalled_first_then_the_oldest() {
        // Start times are clock ticks: ties are common, and pids wrap.
        let members = HashMap::from([(7, 50), (300, 49), (100, 50), (99, 51), (101, 50)]);
        let order = |main| {
            signal_order(&members, main)
                .into_iter()
                .map(|(p, _)| p)
                .collect::<Vec<_>>()
        };
        assert_eq!(order(Some(100)), [100, 300, 7, 101, 99]);
        assert_eq!(order(Some(99)), [99, 300, 7, 100, 101]);
        // The main process gone (or never known): age alone.
        assert_eq!(order(Some(5)), [300, 7, 100, 101, 99]);
        assert_eq!(order(None), [300, 7, 100, 101, 99]);
    }
}
