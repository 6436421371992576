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

/// Sizes shipped with Cairn: Azure's names (so specs from Azure ML work unchanged) and plain ones.
pub const SIZES: &[Size] = &[
    Size { name: Cow::Borrowed("STANDARD_D2_V2"), cores: 2, memory_gb: 7.0 },
    Size { name: Cow::Borrowed("STANDARD_D3_V2"), cores: 4, memory_gb: 14.0 },
    Size { name: Cow::Borrowed("STANDARD_D4_V2"), cores: 8, memory_gb: 28.0 },
    Size { name: Cow::Borrowed("STANDARD_DS3_V2"), cores: 4, memory_gb: 14.0 },
    Size { name: Cow::Borrowed("STANDARD_DS11_V2"), cores: 2, memory_gb: 14.0 },
    Size { name: Cow::Borrowed("STANDARD_F4S_V2"), cores: 4, memory_gb: 8.0 },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_found_case_insensitively() {
        assert_eq!(size("standard_d2_v2").unwrap().cores, 2);
        assert!(size("nope").is_none());
        assert!(thread_limits(&size("large").unwrap()).contains(&("OMP_NUM_THREADS".into(), "4".into())));
    }
}
