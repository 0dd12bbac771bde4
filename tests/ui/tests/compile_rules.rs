//! The trybuild cases beside this crate (see its documentation). trybuild runs one set of cases at
//! a time; the three areas are three tests so that a failure names its area.

#[test]
fn definition_rules_enforced_at_compile_time() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("definition/*.rs");
}

#[test]
fn macro_rules_enforced_at_compile_time() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("macros/fail/*.rs");
    cases.pass("macros/pass/*.rs");
}

#[test]
fn transactional_command_rules_enforced_at_compile_time() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("transactional/fail/*.rs");
    cases.pass("transactional/pass/*.rs");
}
