//! Runs the deterministic simulator over many seeds.
//!
//! - `cargo test -p wharf-tests --test sim`: the CI budget of seeds (20,000; the core
//!   and the simulator are built optimised in the test profile, see Cargo.toml);
//! - `WHARF_SIM_SEEDS=100000 cargo test --release -p wharf-tests --test sim`: more;
//! - `WHARF_SIM_SEED=1234 cargo test -p wharf-tests --test sim -- replay --nocapture`:
//!   one seed, with its transcript printed.

use wharf_tests::sim;

const DEFAULT_SEEDS: u64 = 20_000;
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

/// The simulator must reach the paths it exists for; a planner or driver change that
/// stops producing them would otherwise pass silently.
#[test]
fn coverage() {
    let mut total = std::collections::BTreeMap::<String, u64>::new();
    for seed in 0..300 {
        for (k, v) in sim::run(seed, false).stats {
            *total.entry(k).or_default() += v;
        }
    }
    println!("{total:#?}");
    let must = [
        "upload:226-checked",
        "upload:failed-checked",
        "download:226-checked",
        "xfer:Complete",
        "xfer:ConnectionLost",
        "xfer:Storage",
        "xfer:Aborted",
        "action:AbortTransfer",
        "action:CloseData",
        "xfer:Stalled",
        "xfer:TooLarge",
        "xfer:client-reset",
        "xfer-timeout",
        "upload:552-checked",
        "accept:thief",
        "tls:secured",
        "tls:522-not-resumed",
        "xfer:Tls",
        "action:RefuseData",
        "action:StopListening",
        "timeout",
        "eof",
        "refused",
        "reply:421",
        "reply:425",
        "reply:426",
        "reply:451",
        "reply:452",
        "reply:553",
        // Crashes at every step of an upload commit, and at any time.
        "crash:commit:fsync-file",
        "crash:commit:link",
        "crash:commit:fsync-dir",
        "crash:time",
        "crash:checked-in-flight",
    ];
    for key in must {
        assert!(
            total.get(key).copied().unwrap_or(0) > 0,
            "never happened: {key}"
        );
    }
}
