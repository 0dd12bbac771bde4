//! Conformance suites: one call checks an implementation against the contract of its trait and
//! panics naming the rule it broke.

pub mod broker;
pub mod repository;
