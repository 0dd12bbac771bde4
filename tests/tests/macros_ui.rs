//! Diagnostics of the attribute macros: each `ui/macros/fail` case breaks one rule and must fail
//! with the message in its `.stderr`; each `ui/macros/pass` case is an allowed shape that must
//! compile. Bless with `TRYBUILD=overwrite cargo test -p saga-tests --test macros_ui`, then read
//! every changed `.stderr`.

#[test]
fn macro_rules_enforced_at_compile_time() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/macros/fail/*.rs");
    cases.pass("ui/macros/pass/*.rs");
}
