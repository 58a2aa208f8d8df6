//! The dependency graph: cycles, start waves and stop waves.
//!
//! Both `requires` and `after` order services; `requires` additionally gates a start
//! on readiness, which is the engine's business, not the graph's.
//!
//! - **Start waves**: wave 0 holds the services that wait for nothing; a service is in
//!   wave `1 + max(wave of what it waits for)`. The services of one wave may start in
//!   parallel.
//! - **Stop waves** run the other way, and as early as possible: wave 0 holds the
//!   services nothing waits for; a service is in wave `1 + max(stop wave of the services
//!   waiting for it)`. A service therefore stops only after everything that depends on
//!   it has stopped. Stop waves are not simply the start waves reversed: a leaf that
//!   nothing depends on stops in the first wave, however early it started, which keeps
//!   the number of waves (and so the kill reserves, see [`crate::plan`]) small.

use std::collections::{BTreeMap, VecDeque};

use crate::schema::Service;

/// Services by index, with the edges "i waits for j".
#[derive(Clone, Debug)]
pub struct DepGraph {
    names: Vec<String>,
    deps: Vec<Vec<usize>>,
}

impl DepGraph {
    /// The graph of `services`; dependencies on unknown names are left out (the
    /// loader reports them).
    pub fn new(services: &BTreeMap<String, Service>) -> DepGraph {
        DepGraph::of(services)
    }

    /// The graph of `services`, given with their names sorted (a map's order),
    /// wherever they are kept.
    pub fn of<'a>(services: impl IntoIterator<Item = (&'a String, &'a Service)>) -> DepGraph {
        let (names, services): (Vec<String>, Vec<&Service>) = services
            .into_iter()
            .map(|(name, s)| (name.clone(), s))
            .unzip();
        let index = |n: &str| names.binary_search_by(|x| x.as_str().cmp(n)).ok();
        let deps = services
            .iter()
            .map(|s| s.ordering_deps().filter_map(index).collect())
            .collect();
        DepGraph { names, deps }
    }

    /// A graph from explicit edges `(from, waits_for)`, for tests and tools.
    pub fn from_edges(names: &[&str], edges: &[(&str, &str)]) -> DepGraph {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let index = |n: &str| names.iter().position(|x| x == n).expect("known name");
        let mut deps = vec![Vec::new(); names.len()];
        for (from, to) in edges {
            deps[index(from)].push(index(to));
        }
        DepGraph { names, deps }
    }

    /// One cycle per strongly connected knot, each as the path of names from its
    /// alphabetically first member (the edge back to it is implied). Ordered by that
    /// first member.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = self
            .components()
            .into_iter()
            .filter(|c| c.len() > 1 || self.deps[c[0]].contains(&c[0]))
            .map(|c| {
                let start = *c
                    .iter()
                    .min_by_key(|&&i| &self.names[i])
                    .expect("non-empty");
                self.shortest_cycle(start, &c)
                    .into_iter()
                    .map(|i| self.names[i].clone())
                    .collect()
            })
            .collect();
        out.sort();
        out
    }

    /// Breadth-first from `start` inside its component, back to `start`.
    fn shortest_cycle(&self, start: usize, component: &[usize]) -> Vec<usize> {
        let mut parent: Vec<Option<usize>> = vec![None; self.names.len()];
        let mut queue = VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            let mut next: Vec<usize> = self.deps[n].clone();
            next.sort_by_key(|&i| &self.names[i]);
            for m in next {
                if m == start {
                    let mut path = vec![n];
                    while let Some(p) = parent[*path.last().expect("non-empty")] {
                        path.push(p);
                    }
                    path.reverse();
                    return path;
                }
                if component.contains(&m) && parent[m].is_none() && m != start {
                    parent[m] = Some(n);
                    queue.push_back(m);
                }
            }
        }
        unreachable!("a strongly connected component has a cycle through each member")
    }

    /// Tarjan's strongly connected components.
    fn components(&self) -> Vec<Vec<usize>> {
        struct Walk<'g> {
            g: &'g DepGraph,
            index: Vec<Option<usize>>,
            low: Vec<usize>,
            on_stack: Vec<bool>,
            stack: Vec<usize>,
            next: usize,
            out: Vec<Vec<usize>>,
        }
        impl Walk<'_> {
            fn visit(&mut self, v: usize) {
                self.index[v] = Some(self.next);
                self.low[v] = self.next;
                self.next += 1;
                self.stack.push(v);
                self.on_stack[v] = true;
                for &w in &self.g.deps[v] {
                    match self.index[w] {
                        None => {
                            self.visit(w);
                            self.low[v] = self.low[v].min(self.low[w]);
                        }
                        Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                        Some(_) => {}
                    }
                }
                if Some(self.low[v]) == self.index[v] {
                    let mut comp = Vec::new();
                    loop {
                        let w = self.stack.pop().expect("v is on the stack");
                        self.on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    self.out.push(comp);
                }
            }
        }
        let n = self.names.len();
        let mut walk = Walk {
            g: self,
            index: vec![None; n],
            low: vec![0; n],
            on_stack: vec![false; n],
            stack: Vec::new(),
            next: 0,
            out: Vec::new(),
        };
        for v in 0..n {
            if walk.index[v].is_none() {
                walk.visit(v);
            }
        }
        walk.out
    }

    /// Start waves, names sorted within a wave. The graph must be acyclic.
    pub fn start_waves(&self) -> Vec<Vec<String>> {
        self.waves(&self.deps)
    }

    /// Stop waves, names sorted within a wave. The graph must be acyclic.
    pub fn stop_waves(&self) -> Vec<Vec<String>> {
        let mut dependents = vec![Vec::new(); self.names.len()];
        for (i, ds) in self.deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        self.waves(&dependents)
    }

    /// Layers by longest path along `edges` (node i comes after every `edges[i]`),
    /// computed in Kahn order.
    fn waves(&self, edges: &[Vec<usize>]) -> Vec<Vec<String>> {
        let n = self.names.len();
        let mut waiting = vec![0usize; n];
        let mut unblocks = vec![Vec::new(); n];
        for (i, es) in edges.iter().enumerate() {
            waiting[i] = es.len();
            for &e in es {
                unblocks[e].push(i);
            }
        }
        let mut level = vec![0usize; n];
        let mut ready: VecDeque<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
        let mut done = 0;
        while let Some(i) = ready.pop_front() {
            done += 1;
            for &j in &unblocks[i] {
                level[j] = level[j].max(level[i] + 1);
                waiting[j] -= 1;
                if waiting[j] == 0 {
                    ready.push_back(j);
                }
            }
        }
        assert_eq!(done, n, "waves of a graph with a cycle");
        let depth = level.iter().max().map_or(0, |m| m + 1);
        let mut out = vec![Vec::new(); depth];
        for (i, l) in level.into_iter().enumerate() {
            out[l].push(self.names[i].clone());
        }
        for w in &mut out {
            w.sort();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waves(w: &[&[&str]]) -> Vec<Vec<String>> {
        w.iter()
            .map(|x| x.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn start_and_stop_waves() {
        // web -> api -> db, worker -> db, lone stands alone.
        let g = DepGraph::from_edges(
            &["api", "db", "lone", "web", "worker"],
            &[("web", "api"), ("api", "db"), ("worker", "db")],
        );
        assert_eq!(
            g.start_waves(),
            waves(&[&["db", "lone"], &["api", "worker"], &["web"]])
        );
        // The leaf `lone` and `worker` stop at once; db only after api and worker.
        assert_eq!(
            g.stop_waves(),
            waves(&[&["lone", "web", "worker"], &["api"], &["db"]])
        );
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn longest_path_decides_the_wave() {
        // c waits for a directly and for a through b: it must be after b.
        let g = DepGraph::from_edges(&["a", "b", "c"], &[("c", "a"), ("c", "b"), ("b", "a")]);
        assert_eq!(g.start_waves(), waves(&[&["a"], &["b"], &["c"]]));
        assert_eq!(g.stop_waves(), waves(&[&["c"], &["b"], &["a"]]));
    }

    #[test]
    fn empty_graph_has_no_waves() {
        let g = DepGraph::from_edges(&[], &[]);
        assert!(g.start_waves().is_empty());
        assert!(g.stop_waves().is_empty());
    }

    #[test]
    fn cycles_are_named_whole() {
        let g = DepGraph::from_edges(
            &["a", "b", "c", "d", "self"],
            &[
                ("b", "c"),
                ("c", "a"),
                ("a", "b"),
                ("d", "a"),
                ("self", "self"),
            ],
        );
        assert_eq!(
            g.cycles(),
            vec![
                vec!["a".to_string(), "b".into(), "c".into()],
                vec!["self".to_string()]
            ]
        );
    }

    #[test]
    fn a_knot_with_two_loops_reports_the_shortest_through_its_first_member() {
        // a -> b -> a and a -> c -> d -> a share a.
        let g = DepGraph::from_edges(
            &["a", "b", "c", "d"],
            &[("a", "c"), ("c", "d"), ("d", "a"), ("a", "b"), ("b", "a")],
        );
        assert_eq!(g.cycles(), vec![vec!["a".to_string(), "b".into()]]);
    }

    #[test]
    fn deep_chains_do_not_overflow() {
        let names: Vec<String> = (0..5000).map(|i| format!("s{i:05}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let edges: Vec<(&str, &str)> = refs.windows(2).map(|w| (w[1], w[0])).collect();
        let g = DepGraph::from_edges(&refs, &edges);
        assert!(g.cycles().is_empty());
        assert_eq!(g.start_waves().len(), 5000);
    }
}
