//! Opening the database named on the command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use dossier_store::postgres::PgStore;
use dossier_store::sqlite::SqliteStore;
use dossier_store::Store;

/// The default database: `.dossier/dossier.db` in the project.
pub fn default_db(project: &Path) -> String {
    project
        .join(".dossier")
        .join("dossier.db")
        .to_string_lossy()
        .into_owned()
}

/// Opens `postgres://…`, `sqlite:…` or a SQLite file path (created if missing).
pub async fn open(db: &str) -> anyhow::Result<Arc<dyn Store>> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        let s = PgStore::connect(db)
            .await
            .with_context(|| format!("cannot open the PostgreSQL database {db}"))?;
        return Ok(Arc::new(s));
    }
    let path = PathBuf::from(
        db.strip_prefix("sqlite://")
            .or_else(|| db.strip_prefix("sqlite:"))
            .unwrap_or(db),
    );
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        }
    }
    let s = SqliteStore::open(&path)
        .await
        .with_context(|| format!("cannot open the SQLite database {}", path.display()))?;
    Ok(Arc::new(s))
}
