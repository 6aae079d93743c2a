//! Rebuild when a migration is added or edited: `sqlx::migrate!` embeds the directory at compile
//! time, and cargo does not otherwise know it depends on it.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
