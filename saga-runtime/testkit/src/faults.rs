//! Crash points for durability tests.
//!
//! A process built with `saga-runtime`'s feature `fault-injection` aborts (as `kill -9` would: no
//! destructors, no flushing) the `n`-th time it reaches crash point `point` when the environment
//! variable [`CRASH_AT_VAR`] is `point:n` (see [`crash_at`]). Without the feature the points compile
//! to nothing, so production builds never read the variable.

/// Every crash point, in the order an execution usually reaches them.
pub const POINTS: &[&str] = saga_runtime::__private::CRASH_POINTS;

/// The environment variable naming the crash point of a `fault-injection` build.
pub const CRASH_AT_VAR: &str = "SAGA_CRASH_AT";

/// The value of [`CRASH_AT_VAR`] that aborts at the `nth` time (counting from 1) the process
/// reaches `point`.
///
/// # Panics
///
/// If `point` is not one of [`POINTS`] or `nth` is 0: a test naming a point that does not exist
/// would otherwise never crash and pass for the wrong reason.
pub fn crash_at(point: &str, nth: u64) -> String {
    assert!(POINTS.contains(&point), "unknown crash point `{point}`");
    assert!(nth > 0, "crash points count from 1");
    format!("{point}:{nth}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_point_and_the_count() {
        assert_eq!(crash_at("after-store", 3), "after-store:3");
    }

    #[test]
    #[should_panic(expected = "unknown crash point")]
    fn refuses_an_unknown_point() {
        crash_at("after-lunch", 1);
    }
}
