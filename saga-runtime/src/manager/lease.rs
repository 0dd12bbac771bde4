//! Leases: an instance that advances an execution stores itself as its owner until a time; until
//! then, other instances leave the execution alone, and after it their recovery may take it over.

use super::{Inner, clamp_ms, duration_ms};
use crate::execution::{ExecutionRecord, now_ms};

impl Inner {
    /// The other instance holding `record`, if its lease still runs.
    pub(super) fn held_elsewhere(&self, record: &ExecutionRecord) -> Option<String> {
        holder(record, &self.instance, now_ms()).map(str::to_owned)
    }

    /// Until when a store made now holds the execution for this instance.
    pub(super) fn lease_until_ms(&self) -> u64 {
        clamp_ms(now_ms().saturating_add(duration_ms(self.lease)))
    }
}

/// The instance other than `instance` whose lease on `record` still runs at `now_ms`.
fn holder<'r>(record: &'r ExecutionRecord, instance: &str, now_ms: u64) -> Option<&'r str> {
    match (&record.owner, record.lease_until_ms) {
        (Some(owner), Some(until)) if owner != instance && until > now_ms => Some(owner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::SagaExecution;
    use crate::execution::testing::{Trail, local_saga};

    fn held(owner: Option<&str>, until: Option<u64>) -> ExecutionRecord {
        let mut record = SagaExecution::new(local_saga(), Trail::default())
            .to_record()
            .expect("encodes");
        record.owner = owner.map(str::to_owned);
        record.lease_until_ms = until;
        record
    }

    #[test]
    fn another_instance_holds_an_execution_while_its_lease_runs() {
        let record = held(Some("b"), Some(2_000));
        assert_eq!(holder(&record, "a", 1_999), Some("b"));
        assert_eq!(holder(&record, "a", 2_000), None, "the lease ran out");
    }

    #[test]
    fn an_instance_never_waits_for_its_own_lease() {
        // Its own name from before a restart: it takes its executions over at once.
        assert_eq!(holder(&held(Some("a"), Some(u64::MAX)), "a", 0), None);
    }

    #[test]
    fn an_execution_at_rest_is_held_by_nobody() {
        assert_eq!(holder(&held(None, None), "a", 0), None);
        assert_eq!(holder(&held(Some("b"), None), "a", 0), None);
    }
}
