//! Definition rules the type system enforces: each case must fail to compile with the diagnostic in
//! its `.stderr` (bless with `TRYBUILD=overwrite cargo test -p saga-tests --test compile_fail`).

#[test]
fn definition_rules_enforced_at_compile_time() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/definition/*.rs");
}
