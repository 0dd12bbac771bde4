//! The `kill -9` crash matrix: the child `crash-child` runs 9 sagas of three local steps (`a`, `b`,
//! `c`, each with a compensation; every third saga fails in `c`) one at a time on a SQLite file or
//! in a fresh schema of the PostgreSQL server named by `SAGA_TEST_POSTGRES_URL` (the tests
//! `postgres_*`, skipped without a server outside CI) and aborts at a crash point
//! (`SAGA_CRASH_AT=<point>:<n>`); it is restarted until it exits 0, and the file or schema then
//! shows:
//!
//! - exactly one execution per planned saga, `finished` (or `errored` for the failing ones), at rest
//!   (no owner, no pending messages), with its transaction committed or rejected (mode `2pc`) or
//!   left open (mode `local`, no autocommit);
//! - every effect of every saga but the one in flight at the crash applied exactly once;
//! - for the saga in flight, what the recovery rule allows and no more (see [`sequence`]): a local
//!   step whose completion was not stored runs again (so every step of the advance under way runs
//!   twice), a compensation whose intent was stored is never run again (so it ran once or not at
//!   all, and its step is recorded `errored-on-failure`), the others run exactly once;
//! - compensations only in failing sagas, never of `c`, `b` before `a`, after the steps they undo;
//! - the effects of the sagas in plan order (the in-flight one is recovered before the next runs).
//!
//! `after-publish`, `before-commit` and `after-commit` are reached only with autocommit (mode
//! `2pc`): sagas of local steps emit no messages of their own, but the commit and reject messages of
//! the two-phase commit are stored with the decision and then published.
//!
//! The backend-specific parts are [`Target`] (where the child runs, and how the test reads it back).
//! Every case runs on a target of its own (a new file, or a new schema dropped at the end).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use saga_runtime::execution::{ExecutionRecord, TransactionState};
use saga_runtime::repository::SqliteRepository;
use saga_runtime::wiring::*;
use saga_testkit::faults::POINTS;
use saga_tests::TestDatabase;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use uuid::Uuid;

/// How many sagas the child plans.
const COUNT: usize = 9;
/// The saga's persisted name in the child.
const SAGA: &str = "crash-matrix";
/// The signal `std::process::abort` raises (the same number on every Unix the tests run on).
const SIGABRT: i32 = 6;
/// The most restarts a crashed child may need to end its sagas.
const RESTARTS: usize = 3;

/// Whether planned saga `n` fails in step `c` (the child's rule).
fn fails(n: usize) -> bool {
    n % 3 == 2
}

/// How the child commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No autocommit: no two-phase commit.
    Local,
    /// Autocommit, with an in-process participant answering the service's transaction topics.
    TwoPhase,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::TwoPhase => "2pc",
        }
    }
}

/// What one saga shows at the end when the process stopped at one of its crash points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expect {
    /// The crash point.
    point: &'static str,
    /// Where the advance stood, and what recovery does about it.
    stage: &'static str,
    /// How often the `do` of `a`, `b`, `c` was applied.
    done: [usize; 3],
    /// How often the `undo` of `a`, `b` was applied (`c`'s never is).
    undone: [usize; 2],
    /// The step whose compensation recovery found under way and did not run again (recorded as
    /// `errored-on-failure`).
    interrupted: Option<&'static str>,
}

/// What a saga that ran without a crash shows.
fn untouched(failing: bool) -> Expect {
    Expect {
        point: "",
        stage: "not in flight",
        done: if failing { [1, 1, 0] } else { [1, 1, 1] },
        undone: if failing { [1, 1] } else { [0, 0] },
        interrupted: None,
    }
}

/// The crash points one saga reaches, in order, each with what a crash there leaves at the end.
///
/// A succeeding saga stores its claim (`created`, held) before any handler, runs `a`, `b`, `c` with
/// no store in between, and stores its end; with autocommit it stores `committing` instead, runs
/// the reservation, stores the decision (`committed`) with the commit messages, and publishes them.
/// A failing saga stores its claim, runs `a`, `b` (`c` fails), then for `b` and then `a`: stores the
/// intent (`running-on-failure`), runs the compensation; and stores its end (with autocommit, with
/// the reject messages, which it then publishes).
fn sequence(mode: Mode, failing: bool) -> Vec<Expect> {
    let step = |point, stage, done, undone, interrupted| Expect {
        point,
        stage,
        done,
        undone,
        interrupted,
    };
    if failing {
        let (done, twice) = ([1, 1, 0], [2, 2, 0]);
        let mut failing = vec![
            step(
                "before-store",
                "claim not stored: the saga runs afresh",
                done,
                [1, 1],
                None,
            ),
            step(
                "after-store",
                "claim stored: resumed from `created`",
                done,
                [1, 1],
                None,
            ),
            step(
                "before-store",
                "b's intent not stored: a and b ran unrecorded and run again, c fails again",
                twice,
                [1, 1],
                None,
            ),
            step(
                "after-store",
                "b's intent stored: b not compensated again (it never was), a compensated",
                done,
                [1, 0],
                Some("b"),
            ),
            step(
                "before-compensation",
                "b's intent stored: b not compensated again (it never was), a compensated",
                done,
                [1, 0],
                Some("b"),
            ),
            step(
                "after-compensation",
                "b compensated, not stored: b not compensated again, a compensated",
                done,
                [1, 1],
                Some("b"),
            ),
            step(
                "before-store",
                "a's intent not stored: b (under way when stored) not again, a compensated",
                done,
                [1, 1],
                Some("b"),
            ),
            step(
                "after-store",
                "a's intent stored: a not compensated again (it never was)",
                done,
                [0, 1],
                Some("a"),
            ),
            step(
                "before-compensation",
                "a's intent stored: a not compensated again (it never was)",
                done,
                [0, 1],
                Some("a"),
            ),
            step(
                "after-compensation",
                "a compensated, not stored: a not compensated again",
                done,
                [1, 1],
                Some("a"),
            ),
            step(
                "before-store",
                "end not stored: a (under way when stored) not compensated again",
                done,
                [1, 1],
                Some("a"),
            ),
            step(
                "after-store",
                "end stored: nothing to recover",
                done,
                [1, 1],
                None,
            ),
        ];
        if mode == Mode::TwoPhase {
            // The reject messages are stored with the end, then published, then marked.
            failing.push(step(
                "after-publish",
                "rejects sent, not marked published: sent again",
                done,
                [1, 1],
                None,
            ));
        }
        return failing;
    }
    let (done, twice) = ([1, 1, 1], [2, 2, 2]);
    let mut steps = vec![
        step(
            "before-store",
            "claim not stored: the saga runs afresh",
            done,
            [0, 0],
            None,
        ),
        step(
            "after-store",
            "claim stored: resumed from `created`",
            done,
            [0, 0],
            None,
        ),
    ];
    match mode {
        Mode::Local => steps.extend([
            step(
                "before-store",
                "end not stored: a, b, c ran unrecorded and run again",
                twice,
                [0, 0],
                None,
            ),
            step(
                "after-store",
                "end stored: nothing to recover",
                done,
                [0, 0],
                None,
            ),
        ]),
        Mode::TwoPhase => steps.extend([
            step(
                "before-store",
                "`committing` not stored: a, b, c ran unrecorded and run again",
                twice,
                [0, 0],
                None,
            ),
            step(
                "after-store",
                "`committing` stored: committed again",
                done,
                [0, 0],
                None,
            ),
            step(
                "before-commit",
                "`committing` stored: committed again",
                done,
                [0, 0],
                None,
            ),
            step(
                "before-store",
                "decision not stored: reserved and committed again",
                done,
                [0, 0],
                None,
            ),
            step(
                "after-store",
                "decision stored with the commit messages: they are sent again",
                done,
                [0, 0],
                None,
            ),
            step(
                "after-commit",
                "decision stored with the commit messages: they are sent again",
                done,
                [0, 0],
                None,
            ),
            step(
                "after-publish",
                "commits sent, not marked published: sent again",
                done,
                [0, 0],
                None,
            ),
        ]),
    }
    steps
}

/// Every crash point the run of the plan reaches, in order: (saga, what a crash there leaves).
fn timeline(mode: Mode) -> Vec<(usize, Expect)> {
    (0..COUNT)
        .flat_map(|n| sequence(mode, fails(n)).into_iter().map(move |e| (n, e)))
        .collect()
}

/// The values of `n` tried for `point`: 1, 2, 5, 8, the first hit of each distinct stage of a
/// succeeding and of a failing saga, and the last hit, among those the plan reaches.
fn nths(mode: Mode, point: &str) -> Vec<usize> {
    let hits: Vec<(usize, Expect)> = timeline(mode)
        .into_iter()
        .filter(|(_, expect)| expect.point == point)
        .collect();
    let mut nths = vec![1, 2, 5, 8, hits.len()];
    let mut seen = Vec::new();
    for (index, (n, expect)) in hits.iter().enumerate() {
        // Sagas 0 and 2 are the first succeeding and failing ones.
        let position = sequence(mode, fails(*n))
            .iter()
            .filter(|other| other.point == point)
            .position(|other| other == expect);
        let key = (fails(*n), position, expect.stage);
        if !seen.contains(&key) {
            seen.push(key);
            nths.push(index + 1);
        }
    }
    nths.retain(|nth| (1..=hits.len()).contains(nth));
    nths.sort_unstable();
    nths.dedup();
    nths
}

/// One recorded handler run.
#[derive(Debug, Clone)]
struct Effect {
    seq: i64,
    n: usize,
    step: String,
    kind: String,
}

/// The storage a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A SQLite file, removed (with its write-ahead log) when dropped.
struct SqliteFile(PathBuf);

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.0.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Where the child runs, and how the test reads it back.
enum Target {
    Sqlite(SqliteFile),
    /// A fresh schema, dropped by [`Target::close`] (a failing case leaves it, to look at).
    Postgres(TestDatabase),
}

impl Target {
    fn sqlite() -> Self {
        Self::Sqlite(SqliteFile(
            std::env::temp_dir().join(format!("saga-crash-matrix-{}.db", Uuid::new_v4())),
        ))
    }

    /// A fresh target on `backend`, or `None` (after printing why) when there is no PostgreSQL
    /// server to test against outside CI.
    async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite()),
            Backend::Postgres => TestDatabase::connect().await.map(Self::Postgres),
        }
    }

    /// The child's first argument.
    fn arg(&self) -> String {
        match self {
            Self::Sqlite(file) => file.0.display().to_string(),
            Self::Postgres(db) => db.url().to_owned(),
        }
    }

    /// The child's `SAGA_CRASH_SCHEMA`.
    fn schema(&self) -> Option<&str> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(db) => Some(db.schema()),
        }
    }

    async fn repository(&self) -> Arc<dyn SagaExecutionRepository> {
        match self {
            Self::Sqlite(file) => Arc::new(SqliteRepository::open(&file.0).await.expect("opens")),
            Self::Postgres(db) => Arc::new(db.repository().await),
        }
    }

    /// Removes the target: the file, or the schema and everything in it.
    async fn close(self) {
        match self {
            Self::Sqlite(file) => drop(file),
            Self::Postgres(db) => db.drop().await,
        }
    }

    /// The effects, in order, with the planned index of their saga (all of them must name a
    /// planned saga).
    async fn effects(&self) -> Vec<Effect> {
        const TOTAL: &str = "SELECT COUNT(*) FROM effects";
        const ROWS: &str = "SELECT e.seq, p.n, e.step, e.kind FROM effects e \
                            JOIN planned p ON p.id = e.saga ORDER BY e.seq";
        let (total, rows): (i64, Vec<(i64, i64, String, String)>) = match self {
            Self::Sqlite(file) => {
                let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&file.0))
                    .await
                    .expect("the file opens");
                let total = sqlx::query_scalar(TOTAL)
                    .fetch_one(&pool)
                    .await
                    .expect("effects are readable");
                let rows = sqlx::query_as(ROWS)
                    .fetch_all(&pool)
                    .await
                    .expect("effects are readable");
                pool.close().await;
                (total, rows)
            }
            // The test database's pool has the schema as its `search_path`.
            Self::Postgres(db) => {
                let total = sqlx::query_scalar(TOTAL)
                    .fetch_one(db.pool())
                    .await
                    .expect("effects are readable");
                let rows = sqlx::query_as(ROWS)
                    .fetch_all(db.pool())
                    .await
                    .expect("effects are readable");
                (total, rows)
            }
        };
        assert_eq!(rows.len() as i64, total, "an effect names no planned saga");
        rows.into_iter()
            .map(|(seq, n, step, kind)| Effect {
                seq,
                n: usize::try_from(n).expect("a planned index"),
                step,
                kind,
            })
            .collect()
    }
}

/// Runs the child on `target`, with `SAGA_CRASH_AT` set to `crash` if given (and removed if not).
fn child(target: &Target, mode: Mode, crash: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crash-child"));
    command
        .arg(target.arg())
        .arg(COUNT.to_string())
        .arg(mode.arg())
        .env_remove("RUST_LOG");
    match target.schema() {
        Some(schema) => command.env("SAGA_CRASH_SCHEMA", schema),
        None => command.env_remove("SAGA_CRASH_SCHEMA"),
    };
    match crash {
        Some(crash) => command.env("SAGA_CRASH_AT", crash),
        None => command.env_remove("SAGA_CRASH_AT"),
    };
    command.output().expect("the child starts")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the child without a crash until it exits 0 (at most [`RESTARTS`] times); returns its logs.
fn run_to_the_end(target: &Target, mode: Mode, context: &str) -> String {
    let mut logs = String::new();
    for attempt in 1..=RESTARTS {
        let output = child(target, mode, None);
        logs.push_str(&format!("--- run {attempt} ({})\n", output.status));
        logs.push_str(&stderr(&output));
        assert_eq!(
            output.status.signal(),
            None,
            "{context}: a run without a crash point died by a signal\n{logs}"
        );
        if output.status.success() {
            return logs;
        }
    }
    panic!("{context}: the child did not end its sagas in {RESTARTS} runs\n{logs}");
}

/// What the check demands of one saga's effects.
#[derive(Debug, Clone, Copy)]
enum Demand {
    /// Exactly these counts and this interrupted compensation.
    Exact(Expect),
    /// Only what the recovery rule guarantees whatever the crashes: each step applied at least
    /// once, the steps of one advance as often as each other (no store comes between them);
    /// each compensation of a failing saga applied exactly once, or at most once if it is
    /// recorded as interrupted.
    Rule,
}

/// The exact demand on every saga but `in_flight`, which has its own.
fn exact_but(in_flight: Option<(usize, Expect)>) -> impl Fn(usize) -> Demand {
    move |n| match in_flight {
        Some((k, expect)) if k == n => Demand::Exact(expect),
        _ => Demand::Exact(untouched(fails(n))),
    }
}

/// Checks the end state of `target`, with `demand(n)` on the effects of saga `n`.
async fn check(target: &Target, mode: Mode, demand: impl Fn(usize) -> Demand, context: &str) {
    let mut interrupted_steps = BTreeMap::<usize, Vec<String>>::new();

    // (a) and (d): one execution per planned saga, terminal, at rest.
    let repository = target.repository().await;
    let ids = repository.list_by_saga(SAGA).await.expect("listed");
    assert_eq!(ids.len(), COUNT, "{context}: executions");
    let mut records = BTreeMap::<usize, ExecutionRecord>::new();
    for id in ids {
        let record = repository.load(id).await.expect("loads");
        let n = record.context::<serde_json::Value>().expect("decodes")["n"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .expect("the context names its planned saga");
        assert!(
            records.insert(n, record).is_none(),
            "{context}: saga {n} has two executions"
        );
    }
    assert!(
        repository
            .list_recoverable(None, 100)
            .await
            .expect("listed")
            .is_empty(),
        "{context}: executions still need recovery"
    );
    for (n, record) in &records {
        let n = *n;
        let failing = fails(n);
        assert!(n < COUNT, "{context}: saga {n} was not planned");
        let (status, transaction) = match (failing, mode) {
            (false, Mode::Local) => (SagaStatus::Finished, TransactionState::Open),
            (true, Mode::Local) => (SagaStatus::Errored, TransactionState::Open),
            (false, Mode::TwoPhase) => (SagaStatus::Finished, TransactionState::Committed),
            (true, Mode::TwoPhase) => (SagaStatus::Errored, TransactionState::Rejected),
        };
        assert_eq!(record.status, status, "{context}: saga {n}'s status");
        assert_eq!(
            record.transaction, transaction,
            "{context}: saga {n}'s transaction"
        );
        assert_eq!(record.owner, None, "{context}: saga {n} is still held");
        assert!(
            record.pending.is_empty(),
            "{context}: saga {n} has pending messages"
        );
        let interrupted: Vec<&str> = record
            .steps
            .iter()
            .filter(|step| step.status() == StepStatus::ErroredOnFailure)
            .map(|step| step.name())
            .collect();
        if let Demand::Exact(expect) = demand(n) {
            assert_eq!(
                interrupted,
                expect.interrupted.into_iter().collect::<Vec<_>>(),
                "{context}: saga {n}'s compensations recorded as interrupted ({})",
                expect.stage
            );
        }
        assert!(
            failing || interrupted.is_empty(),
            "{context}: saga {n} did not fail but recorded compensations"
        );
        interrupted_steps.insert(n, interrupted.into_iter().map(str::to_owned).collect());
    }

    // (b) and (c): the effects.
    let effects = target.effects().await;
    for pair in effects.windows(2) {
        assert!(
            pair[0].n <= pair[1].n,
            "{context}: the effects of saga {} follow those of saga {}",
            pair[1].n,
            pair[0].n
        );
    }
    for n in 0..COUNT {
        let mine: Vec<&Effect> = effects.iter().filter(|effect| effect.n == n).collect();
        let count = |step: &str, kind: &str| {
            mine.iter()
                .filter(|effect| effect.step == step && effect.kind == kind)
                .count()
        };
        let done = [count("a", "do"), count("b", "do"), count("c", "do")];
        let undone = [count("a", "undo"), count("b", "undo")];
        match demand(n) {
            Demand::Exact(expect) => {
                assert_eq!(
                    done, expect.done,
                    "{context}: saga {n}'s `do` of a, b, c ({}): {mine:?}",
                    expect.stage
                );
                assert_eq!(
                    undone, expect.undone,
                    "{context}: saga {n}'s `undo` of a, b ({}): {mine:?}",
                    expect.stage
                );
            }
            Demand::Rule => {
                let c = if fails(n) { 0 } else { done[0] };
                assert!(
                    done[0] >= 1 && done == [done[0], done[0], c],
                    "{context}: saga {n}'s `do` of a, b, c: {done:?}: {mine:?}"
                );
                let interrupted = &interrupted_steps[&n];
                for (index, step) in ["a", "b"].into_iter().enumerate() {
                    let allowed = match (fails(n), interrupted.iter().any(|i| i == step)) {
                        (false, _) => 0..=0,
                        (true, false) => 1..=1,
                        (true, true) => 0..=1,
                    };
                    assert!(
                        allowed.contains(&undone[index]),
                        "{context}: saga {n}'s `undo` of {step} applied {} times \
                         (interrupted: {interrupted:?}): {mine:?}",
                        undone[index]
                    );
                }
            }
        }
        assert_eq!(
            count("c", "undo"),
            0,
            "{context}: saga {n} compensated c: {mine:?}"
        );
        assert_eq!(
            done.iter().sum::<usize>() + undone.iter().sum::<usize>(),
            mine.len(),
            "{context}: saga {n} has unknown effects: {mine:?}"
        );
        let last_do = mine
            .iter()
            .filter(|effect| effect.kind == "do")
            .map(|effect| effect.seq)
            .max();
        let undos: Vec<(&str, i64)> = mine
            .iter()
            .filter(|effect| effect.kind == "undo")
            .map(|effect| (effect.step.as_str(), effect.seq))
            .collect();
        for (step, seq) in &undos {
            assert!(
                Some(*seq) > last_do,
                "{context}: saga {n}'s undo of {step} came before one of its steps: {mine:?}"
            );
        }
        let order: Vec<&str> = undos.iter().map(|(step, _)| *step).collect();
        assert!(
            order.is_empty() || order == ["b", "a"] || order == ["a"] || order == ["b"],
            "{context}: saga {n} compensated in the order {order:?}"
        );
    }
}

/// Crashes a child at the `nth` hit of `point` on `target`, restarts it to the end, checks the
/// file or schema and removes it.
async fn crash_at(target: Target, mode: Mode, point: &str, nth: usize) {
    let context = format!("{} crash at {point}:{nth}", mode.arg());
    let (in_flight, expect) = timeline(mode)
        .into_iter()
        .filter(|(_, expect)| expect.point == point)
        .nth(nth - 1)
        .unwrap_or_else(|| panic!("{context}: the plan does not reach it"));

    let crashed = child(&target, mode, Some(&format!("{point}:{nth}")));
    assert_eq!(
        crashed.status.signal(),
        Some(SIGABRT),
        "{context}: the child did not abort ({})\n{}",
        crashed.status,
        stderr(&crashed)
    );
    assert!(
        stderr(&crashed).contains(&format!("crash point `{point}` reached")),
        "{context}: the child aborted elsewhere\n{}",
        stderr(&crashed)
    );
    let logs = run_to_the_end(&target, mode, &context);
    let context = format!(
        "{context} (saga {in_flight}: {})\n--- crashed run\n{}{logs}",
        expect.stage,
        stderr(&crashed)
    );
    check(
        &target,
        mode,
        exact_but(Some((in_flight, expect))),
        &context,
    )
    .await;

    // Once everything ended, another start finds nothing to do and changes nothing.
    let effects = target.effects().await.len();
    let again = child(&target, mode, None);
    assert!(
        again.status.success(),
        "{context}: a start after the end failed\n{}",
        stderr(&again)
    );
    assert_eq!(
        target.effects().await.len(),
        effects,
        "{context}: a start after the end applied effects"
    );
    target.close().await;
}

/// Runs the matrix of `mode` at `point` on `backend`, each case on a target of its own.
async fn matrix(backend: Backend, mode: Mode, point: &str) {
    assert!(POINTS.contains(&point), "unknown crash point {point}");
    let nths = nths(mode, point);
    assert!(!nths.is_empty(), "{} never reaches {point}", mode.arg());
    for nth in nths {
        let Some(target) = Target::new(backend).await else {
            return;
        };
        crash_at(target, mode, point, nth).await;
    }
}

macro_rules! matrix {
    ($backend:ident; $($name:ident: $mode:ident, $point:literal;)+) => {$(
        #[tokio::test]
        async fn $name() {
            matrix(Backend::$backend, Mode::$mode, $point).await;
        }
    )+};
}

matrix! {
    Sqlite;
    local_before_store: Local, "before-store";
    local_after_store: Local, "after-store";
    local_before_compensation: Local, "before-compensation";
    local_after_compensation: Local, "after-compensation";
    two_phase_before_store: TwoPhase, "before-store";
    two_phase_after_store: TwoPhase, "after-store";
    two_phase_before_compensation: TwoPhase, "before-compensation";
    two_phase_after_compensation: TwoPhase, "after-compensation";
    two_phase_before_commit: TwoPhase, "before-commit";
    two_phase_after_commit: TwoPhase, "after-commit";
    two_phase_after_publish: TwoPhase, "after-publish";
}

matrix! {
    Postgres;
    postgres_local_before_store: Local, "before-store";
    postgres_local_after_store: Local, "after-store";
    postgres_local_before_compensation: Local, "before-compensation";
    postgres_local_after_compensation: Local, "after-compensation";
    postgres_two_phase_before_store: TwoPhase, "before-store";
    postgres_two_phase_after_store: TwoPhase, "after-store";
    postgres_two_phase_before_compensation: TwoPhase, "before-compensation";
    postgres_two_phase_after_compensation: TwoPhase, "after-compensation";
    postgres_two_phase_before_commit: TwoPhase, "before-commit";
    postgres_two_phase_after_commit: TwoPhase, "after-commit";
    postgres_two_phase_after_publish: TwoPhase, "after-publish";
}

#[test]
fn the_model_covers_every_point() {
    for mode in [Mode::Local, Mode::TwoPhase] {
        for point in POINTS {
            let reached = timeline(mode).iter().any(|(_, e)| e.point == *point);
            let expected = match *point {
                "after-publish" | "before-commit" | "after-commit" => mode == Mode::TwoPhase,
                _ => true,
            };
            assert_eq!(reached, expected, "{} at {point}", mode.arg());
        }
    }
}

/// Runs the plan without a crash in both modes on `backend`: everything applied exactly once.
async fn without_a_crash(backend: Backend) {
    for mode in [Mode::Local, Mode::TwoPhase] {
        let Some(target) = Target::new(backend).await else {
            return;
        };
        let output = child(&target, mode, None);
        assert!(
            output.status.success(),
            "{}: the child failed\n{}",
            mode.arg(),
            stderr(&output)
        );
        check(&target, mode, exact_but(None), mode.arg()).await;
        // A second start finds the plan done.
        let effects = target.effects().await.len();
        let again = child(&target, mode, None);
        assert!(again.status.success(), "{}", stderr(&again));
        assert_eq!(target.effects().await.len(), effects);
        check(&target, mode, exact_but(None), mode.arg()).await;
        target.close().await;
    }
}

#[tokio::test]
async fn a_run_without_a_crash_applies_everything_exactly_once() {
    without_a_crash(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_a_run_without_a_crash_applies_everything_exactly_once() {
    without_a_crash(Backend::Postgres).await;
}

#[tokio::test]
async fn a_crash_point_that_is_never_reached_lets_the_child_end() {
    // Sagas of local steps without autocommit publish nothing: `after-publish` is never reached.
    let target = Target::sqlite();
    let output = child(&target, Mode::Local, Some("after-publish:1"));
    assert!(output.status.success(), "{}", stderr(&output));
    check(&target, Mode::Local, exact_but(None), "after-publish:1").await;
}

/// Crashes a child on `target` at `first`, then the restart at `second` (if that restart reaches
/// it: a restart with nothing to recover runs the remaining sagas, and may end first), then
/// restarts it to the end, checks the file or schema against the rule and removes it. Returns
/// whether the restart aborted.
async fn crash_twice(
    target: Target,
    mode: Mode,
    first: (&str, usize),
    second: (&str, usize),
) -> bool {
    let context = format!(
        "{} crash at {}:{}, then at {}:{}",
        mode.arg(),
        first.0,
        first.1,
        second.0,
        second.1
    );
    let crashed = child(&target, mode, Some(&format!("{}:{}", first.0, first.1)));
    assert_eq!(
        crashed.status.signal(),
        Some(SIGABRT),
        "{context}: the child did not abort\n{}",
        stderr(&crashed)
    );
    let restarted = child(&target, mode, Some(&format!("{}:{}", second.0, second.1)));
    let aborted = restarted.status.signal() == Some(SIGABRT);
    assert!(
        aborted || restarted.status.success(),
        "{context}: the restart neither aborted nor ended ({})\n{}",
        restarted.status,
        stderr(&restarted)
    );
    let logs = run_to_the_end(&target, mode, &context);
    let context = format!(
        "{context}\n--- crashed run\n{}--- crashed restart\n{}{logs}",
        stderr(&crashed),
        stderr(&restarted)
    );
    check(&target, mode, |_| Demand::Rule, &context).await;
    target.close().await;
    aborted
}

/// Crashes at every stage of the first failing saga (saga 2) in `mode` at `point`, then crashes
/// each restart (which recovers it first) at the first and second hit of each point; each case on
/// a target of its own on `backend`.
async fn crash_during_recovery(backend: Backend, mode: Mode, point: &str) {
    let hits: Vec<(usize, usize)> = timeline(mode)
        .into_iter()
        .filter(|(_, expect)| expect.point == point)
        .enumerate()
        .map(|(index, (n, _))| (index + 1, n))
        .collect();
    // The stages of saga 2 (failing) and, with a commit, of saga 1 (succeeding).
    let firsts: Vec<usize> = hits
        .iter()
        .filter(|(_, n)| *n == 2 || (mode == Mode::TwoPhase && *n == 1))
        .map(|(nth, _)| *nth)
        .collect();
    assert!(!firsts.is_empty(), "{} at {point}", mode.arg());
    let seconds = POINTS
        .iter()
        .filter(|second| timeline(mode).iter().any(|(_, e)| e.point == **second));
    let mut aborted = 0;
    for nth in &firsts {
        for second in seconds.clone() {
            for second_nth in [1, 2] {
                let Some(target) = Target::new(backend).await else {
                    return;
                };
                aborted += usize::from(
                    crash_twice(target, mode, (point, *nth), (second, second_nth)).await,
                );
            }
        }
    }
    assert!(aborted > 0, "no restart reached its crash point");
}

macro_rules! twice {
    ($backend:ident; $($name:ident: $mode:ident, $point:literal;)+) => {$(
        #[tokio::test]
        async fn $name() {
            crash_during_recovery(Backend::$backend, Mode::$mode, $point).await;
        }
    )+};
}

twice! {
    Sqlite;
    twice_local_after_store: Local, "after-store";
    twice_local_after_compensation: Local, "after-compensation";
    twice_two_phase_before_commit: TwoPhase, "before-commit";
}

twice! {
    Postgres;
    postgres_twice_local_after_store: Local, "after-store";
    postgres_twice_local_after_compensation: Local, "after-compensation";
    postgres_twice_two_phase_before_commit: TwoPhase, "before-commit";
}
