//! What the benchmark binaries share: the seeded random numbers their workloads are drawn from.

pub mod rng;
