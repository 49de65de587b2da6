//! Runs the deterministic simulator over many seeds.
//!
//! - `cargo test -p wharf-tests --test sim`: the CI budget of seeds;
//! - `WHARF_SIM_SEEDS=100000 cargo test --release -p wharf-tests --test sim`: more;
//! - `WHARF_SIM_SEED=1234 cargo test -p wharf-tests --test sim -- replay --nocapture`:
//!   one seed, with its transcript printed.

use wharf_tests::sim;

const DEFAULT_SEEDS: u64 = 2000;
/// Seeds are split over several tests so the harness runs them in parallel.
const SHARDS: u64 = 4;

fn seeds() -> u64 {
    std::env::var("WHARF_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEEDS)
}

fn shard(k: u64) {
    let base: u64 = std::env::var("WHARF_SIM_BASE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut failures = Vec::new();
    for seed in (0..seeds()).filter(|s| s % SHARDS == k).map(|s| s + base) {
        if let Err(e) = sim::check_seed(seed) {
            eprintln!("{e}");
            failures.push(e);
            if failures.len() >= 5 {
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} seed(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn seeds_0() {
    shard(0);
}

#[test]
fn seeds_1() {
    shard(1);
}

#[test]
fn seeds_2() {
    shard(2);
}

#[test]
fn seeds_3() {
    shard(3);
}

/// Replays `WHARF_SIM_SEED` with a readable transcript (does nothing without it).
#[test]
fn replay() {
    let Some(seed) = std::env::var("WHARF_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    else {
        return;
    };
    let out = sim::run(seed, true);
    for line in &out.log {
        println!("{line}");
    }
    println!(
        "seed {seed}: {} steps, hash {:#x}: {:?}",
        out.steps, out.hash, out.result
    );
    out.result.unwrap();
}
