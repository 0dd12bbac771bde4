//! Crash points for fault-injection tests (feature `fault-injection`; never enable it in
//! production).
//!
//! The manager names the points where a crash matters to durability: before and after each store,
//! between a store and the publish of what it stored, around each compensation, around the
//! two-phase commit. With the feature on, the environment variable `SAGA_CRASH_AT=<point>:<n>`
//! makes the process abort (as `kill -9` would: no destructors, no flushing) the `n`-th time it
//! reaches `<point>` (counting from 1). Without the feature, the points compile to nothing.

/// Every crash point, in the order an execution usually reaches them.
pub const POINTS: &[&str] = &[
    "before-store",
    "after-store",
    "after-publish",
    "before-compensation",
    "after-compensation",
    "before-commit",
    "after-commit",
];

#[cfg(feature = "fault-injection")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Plan {
        point: String,
        countdown: AtomicU64,
    }

    fn plan() -> Option<&'static Plan> {
        static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
        PLAN.get_or_init(|| {
            let value = std::env::var("SAGA_CRASH_AT").ok()?;
            let (point, nth) = value.rsplit_once(':').unwrap_or((value.as_str(), "1"));
            let nth = nth.parse::<u64>().ok().filter(|nth| *nth > 0)?;
            Some(Plan {
                point: point.to_owned(),
                countdown: AtomicU64::new(nth),
            })
        })
        .as_ref()
    }

    pub(crate) fn reach(point: &'static str) {
        let Some(plan) = plan() else { return };
        if plan.point != point {
            return;
        }
        if plan.countdown.fetch_sub(1, Ordering::SeqCst) == 1 {
            eprintln!("crash point `{point}` reached: aborting");
            std::process::abort();
        }
    }
}

/// Marks crash point `point` (see the module docs).
#[inline]
pub(crate) fn reach(point: &'static str) {
    debug_assert!(POINTS.contains(&point), "unknown crash point {point}");
    #[cfg(feature = "fault-injection")]
    armed::reach(point);
}
