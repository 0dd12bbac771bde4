//! The shop's log lines: warnings, and how each participant's transactions settled (`RUST_LOG`
//! overrides the filter), on standard output beside the services' own lines.

/// Installs the log subscriber.
pub(crate) fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,saga_runtime::transactional=info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .compact()
        .init();
}
