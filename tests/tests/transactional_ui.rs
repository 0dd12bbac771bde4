//! Diagnostics of `#[transactional_command]`: each `ui/transactional/fail` case breaks one rule and
//! must fail with the message in its `.stderr`; each `ui/transactional/pass` case must compile.
//! Bless with `TRYBUILD=overwrite cargo test -p saga-tests --test transactional_ui`, then read every
//! changed `.stderr`.

#[test]
fn transactional_command_rules_enforced_at_compile_time() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/transactional/fail/*.rs");
    cases.pass("ui/transactional/pass/*.rs");
}
