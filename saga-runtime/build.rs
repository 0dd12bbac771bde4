//! Rebuild when a migration is added: `sqlx::migrate!` embeds the migrations directories
//! (`migrations/sqlite`, `migrations/postgres`).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations/sqlite");
    println!("cargo:rerun-if-changed=migrations/postgres");
}
