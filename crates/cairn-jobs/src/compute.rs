//! Compute targets and their size profiles. A `local` target is a set of node slots on the
//! server's machine; each slot runs one job at a time, limited to its size's cores by thread
//! variables. The [`ComputeTarget`] trait is the seam where Ray, Slurm or Kubernetes targets
//! plug in later without changing the scheduler's callers.

use std::borrow::Cow;

/// A named machine size: shipped ([`SIZES`]) or defined by users for their workspace.
#[derive(Clone, Debug, PartialEq)]
pub struct Size {
    pub name: Cow<'static, str>,
    pub cores: u32,
    pub memory_gb: f64,
}

/// Sizes shipped with Cairn: Azure's names (so specs from Azure ML work unchanged: the training
/// clusters' usual sizes and the general-purpose, compute- and memory-optimised ones that
/// managed online deployments' `instance_type` takes, with Azure's vCPUs and GiB) and plain ones.
pub const SIZES: &[Size] = &[
    Size { name: Cow::Borrowed("STANDARD_D2_V2"), cores: 2, memory_gb: 7.0 },
    Size { name: Cow::Borrowed("STANDARD_D3_V2"), cores: 4, memory_gb: 14.0 },
    Size { name: Cow::Borrowed("STANDARD_D4_V2"), cores: 8, memory_gb: 28.0 },
    Size { name: Cow::Borrowed("STANDARD_DS1_V2"), cores: 1, memory_gb: 3.5 },
    Size { name: Cow::Borrowed("STANDARD_DS2_V2"), cores: 2, memory_gb: 7.0 },
    Size { name: Cow::Borrowed("STANDARD_DS3_V2"), cores: 4, memory_gb: 14.0 },
    Size { name: Cow::Borrowed("STANDARD_DS4_V2"), cores: 8, memory_gb: 28.0 },
    Size { name: Cow::Borrowed("STANDARD_DS5_V2"), cores: 16, memory_gb: 56.0 },
    Size { name: Cow::Borrowed("STANDARD_DS11_V2"), cores: 2, memory_gb: 14.0 },
    Size { name: Cow::Borrowed("STANDARD_F2S_V2"), cores: 2, memory_gb: 4.0 },
    Size { name: Cow::Borrowed("STANDARD_F4S_V2"), cores: 4, memory_gb: 8.0 },
    Size { name: Cow::Borrowed("STANDARD_F8S_V2"), cores: 8, memory_gb: 16.0 },
    Size { name: Cow::Borrowed("STANDARD_F16S_V2"), cores: 16, memory_gb: 32.0 },
    Size { name: Cow::Borrowed("STANDARD_E2S_V3"), cores: 2, memory_gb: 16.0 },
    Size { name: Cow::Borrowed("STANDARD_E4S_V3"), cores: 4, memory_gb: 32.0 },
    Size { name: Cow::Borrowed("STANDARD_E8S_V3"), cores: 8, memory_gb: 64.0 },
    Size { name: Cow::Borrowed("small"), cores: 1, memory_gb: 2.0 },
    Size { name: Cow::Borrowed("medium"), cores: 2, memory_gb: 4.0 },
    Size { name: Cow::Borrowed("large"), cores: 4, memory_gb: 16.0 },
];

/// Finds a size by name, ignoring case.
pub fn size(name: &str) -> Option<Size> {
    SIZES.iter().find(|s| s.name.eq_ignore_ascii_case(name)).cloned()
}

/// Environment variables that keep a job within its node's cores.
pub fn thread_limits(size: &Size) -> Vec<(String, String)> {
    ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "CAIRN_NODE_CORES"]
        .iter()
        .map(|k| (k.to_string(), size.cores.to_string()))
        .collect()
}

/// How a compute target kind runs jobs. `local` is the only kind today.
pub trait ComputeTarget: Send + Sync {
    /// The kind's name as used in specs (`local`).
    fn kind(&self) -> &'static str;
    /// A sentence on how cores and memory are limited, shown by `compute show`.
    fn limits(&self, size: &Size) -> String;
}

/// Node slots on the server's own machine.
pub struct LocalTarget;

impl ComputeTarget for LocalTarget {
    fn kind(&self) -> &'static str {
        "local"
    }
    fn limits(&self, size: &Size) -> String {
        format!(
            "{} cores per node through OMP/MKL/OpenBLAS thread variables; {} GiB of memory per node, enforced \
             (a job whose processes' resident memory exceeds it is stopped)",
            size.cores, size.memory_gb
        )
    }
}

/// What a node of a compute target is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Preparing a job (environment, snapshot, inputs) before its process runs.
    Starting,
    /// Running a job.
    Busy,
    /// Allocated, waiting for work; released after the idle time unless it is one of the minimum.
    Idle,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Starting => "starting",
            NodeState::Busy => "busy",
            NodeState::Idle => "idle",
        }
    }
}

/// One node of a pool: a slot number (stable while the node exists), its state and since when (ms).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub id: u32,
    pub state: NodeState,
    pub since_ms: i64,
}

/// The nodes of one compute target, following Azure ML's cluster model: `min_nodes` are always
/// allocated, more are allocated as jobs need them (up to `max_nodes`), and a node above the
/// minimum is released once it has been idle for the target's idle time. Locally a node costs
/// nothing while idle, but the pool keeps the model users know (and `compute show` reports it);
/// a job that finds an idle node reuses it instead of "starting" a new one.
///
/// The pool is driven by observations (how many jobs are starting and running now) rather than
/// by events, so a missed event cannot leave it wrong: each [`NodePool::observe`] reconciles.
#[derive(Clone, Debug, Default)]
pub struct NodePool {
    nodes: Vec<Node>,
}

impl NodePool {
    /// Reconciles the pool with `starting` + `busy` active jobs at `now_ms` and releases nodes
    /// idle for `idle_ms` or more beyond `min_nodes`.
    pub fn observe(&mut self, now_ms: i64, starting: usize, busy: usize, min_nodes: usize, idle_ms: i64) {
        let want = [(NodeState::Starting, starting), (NodeState::Busy, busy)];
        // Nodes whose job finished become idle; a job that moved from starting to busy keeps its node.
        let active = starting + busy;
        let mut working: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].state != NodeState::Idle).collect();
        // Oldest-working nodes keep their jobs; the surplus (most recently started) becomes idle.
        working.sort_by_key(|&i| (self.nodes[i].since_ms, self.nodes[i].id));
        for &i in working.iter().skip(active) {
            self.nodes[i].state = NodeState::Idle;
            self.nodes[i].since_ms = now_ms;
        }
        working.truncate(active);
        // Jobs without a node take the most recently idle node, else a new one.
        while working.len() < active {
            let idle = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].state == NodeState::Idle && !working.contains(&i))
                .max_by_key(|&i| (self.nodes[i].since_ms, self.nodes[i].id));
            let i = match idle {
                Some(i) => i,
                None => {
                    self.nodes.push(Node { id: self.free_id(), state: NodeState::Idle, since_ms: now_ms });
                    self.nodes.len() - 1
                }
            };
            self.nodes[i].since_ms = now_ms;
            self.nodes[i].state = NodeState::Busy;
            working.push(i);
        }
        // Label the working nodes: the longest-working ones are busy, the newest are starting.
        working.sort_by_key(|&i| (self.nodes[i].since_ms, self.nodes[i].id));
        let mut labels = want.iter().rev().flat_map(|&(s, n)| std::iter::repeat_n(s, n));
        for &i in &working {
            let state = labels.next().expect("as many labels as working nodes");
            if self.nodes[i].state != state {
                self.nodes[i].state = state;
                self.nodes[i].since_ms = now_ms;
            }
        }
        // Release long-idle nodes above the minimum, the longest idle first.
        let mut idle: Vec<(i64, u32)> = self
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Idle && now_ms - n.since_ms >= idle_ms)
            .map(|n| (n.since_ms, n.id))
            .collect();
        idle.sort();
        let mut surplus = self.nodes.len().saturating_sub(min_nodes);
        for (_, id) in idle {
            if surplus == 0 {
                break;
            }
            self.nodes.retain(|n| n.id != id);
            surplus -= 1;
        }
        // The minimum is always allocated.
        while self.nodes.len() < min_nodes {
            self.nodes.push(Node { id: self.free_id(), state: NodeState::Idle, since_ms: now_ms });
        }
        self.nodes.sort_by_key(|n| n.id);
    }

    /// The nodes, by id.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// How many nodes are in `state`.
    pub fn count(&self, state: NodeState) -> usize {
        self.nodes.iter().filter(|n| n.state == state).count()
    }

    fn free_id(&self) -> u32 {
        (0..).find(|id| !self.nodes.iter().any(|n| n.id == *id)).expect("a free id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(p: &NodePool) -> Vec<&'static str> {
        p.nodes().iter().map(|n| n.state.as_str()).collect()
    }

    #[test]
    fn azure_sizes_are_found_whatever_their_case() {
        // Azure's samples spell them `Standard_DS3_v2`; its CLI lists `STANDARD_DS3_V2`.
        let ds2 = size("Standard_DS2_v2").expect("a common online-deployment size");
        assert_eq!((ds2.cores, ds2.memory_gb), (2, 7.0));
        assert_eq!(size("standard_e4s_v3").map(|s| (s.cores, s.memory_gb)), Some((4, 32.0)));
        assert_eq!(size("Standard_F2s_v2").map(|s| s.cores), Some(2));
        assert!(size("Standard_DS2_v3").is_none());
        let mut names: Vec<String> = SIZES.iter().map(|s| s.name.to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SIZES.len(), "two shipped sizes share a name");
    }

    #[test]
    fn the_minimum_is_always_allocated() {
        let mut p = NodePool::default();
        p.observe(0, 0, 0, 2, 1000);
        assert_eq!(states(&p), ["idle", "idle"]);
        p.observe(10_000, 0, 0, 2, 1000);
        assert_eq!(p.nodes().len(), 2, "min nodes are never released");
    }

    #[test]
    fn nodes_scale_up_for_jobs_and_down_after_the_idle_time() {
        let mut p = NodePool::default();
        p.observe(0, 2, 0, 0, 1000);
        assert_eq!(states(&p), ["starting", "starting"]);
        p.observe(100, 1, 1, 0, 1000);
        assert_eq!(p.count(NodeState::Busy), 1);
        assert_eq!(p.count(NodeState::Starting), 1);
        // Both jobs end: the nodes stay, idle, until the idle time has passed.
        p.observe(200, 0, 0, 0, 1000);
        assert_eq!(states(&p), ["idle", "idle"]);
        p.observe(1100, 0, 0, 0, 1000);
        assert_eq!(p.nodes().len(), 2, "idle for 900 ms of 1000");
        p.observe(1200, 0, 0, 0, 1000);
        assert!(p.nodes().is_empty(), "released after 1000 ms idle: {:?}", p.nodes());
    }

    #[test]
    fn a_new_job_reuses_an_idle_node() {
        let mut p = NodePool::default();
        p.observe(0, 0, 1, 0, 60_000);
        let first = p.nodes()[0].id;
        p.observe(10, 0, 0, 0, 60_000);
        assert_eq!(states(&p), ["idle"]);
        p.observe(20, 1, 0, 0, 60_000);
        assert_eq!(p.nodes().len(), 1, "no new node while one is idle");
        assert_eq!(p.nodes()[0].id, first);
        assert_eq!(states(&p), ["starting"]);
    }

    #[test]
    fn only_surplus_nodes_above_the_minimum_are_released() {
        let mut p = NodePool::default();
        p.observe(0, 0, 3, 1, 100);
        p.observe(10, 0, 1, 1, 100);
        assert_eq!((p.count(NodeState::Busy), p.count(NodeState::Idle)), (1, 2));
        p.observe(500, 0, 1, 1, 100);
        assert_eq!(states(&p), ["busy"], "the busy node counts towards the minimum");
        p.observe(600, 0, 0, 1, 100);
        p.observe(10_000, 0, 0, 1, 100);
        assert_eq!(states(&p), ["idle"]);
    }

    #[test]
    fn sizes_are_found_case_insensitively() {
        assert_eq!(size("standard_d2_v2").unwrap().cores, 2);
        assert!(size("nope").is_none());
        assert!(thread_limits(&size("large").unwrap()).contains(&("OMP_NUM_THREADS".into(), "4".into())));
    }
}
