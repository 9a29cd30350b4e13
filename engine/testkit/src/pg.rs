//! A fresh PostgreSQL database per test.
//!
//! The tests connect to `DOSSIER_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), create a database with a unique name, run on
//! it and drop it. An unreachable server FAILS the test (a panic, never a skip): CI provides
//! one, and a silent skip would hide a broken backend.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

/// The URL the tests create and drop their databases through (`DOSSIER_TEST_PG_URL`).
pub fn pg_admin_url() -> String {
    std::env::var("DOSSIER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// `url` with its database name replaced (the query string, if any, kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{host}/{db}{query}")
}

/// A database created for one test. Not dropped by `Drop` (that would need an async drop):
/// call [`TempPg::drop_db`], also when the test panicked.
#[derive(Debug)]
pub struct TempPg {
    admin_url: String,
    name: String,
    url: String,
}

impl TempPg {
    /// Creates `<prefix>_<pid>_<nanos>_<counter>` through [`pg_admin_url`].
    ///
    /// # Panics
    /// When PostgreSQL cannot be reached or the database cannot be created.
    pub async fn create(prefix: &str) -> TempPg {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "{prefix}_{}_{}_{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin_url = pg_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is required for these tests ({admin_url}, set DOSSIER_TEST_PG_URL): {e}"
                )
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        conn.close().await.ok();
        let url = with_database(&admin_url, &name);
        TempPg {
            admin_url,
            name,
            url,
        }
    }

    /// The URL of the database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The name of the database.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, closing the connections still open on it (best effort: a failure
    /// is reported on stderr, it does not fail the test).
    pub async fn drop_db(self) {
        let result = async {
            let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
            let dropped = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
            conn.close().await.ok();
            dropped.map(|_| ())
        }
        .await;
        if let Err(e) = result {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}

/// Runs the synchronous `test` with the URL of a fresh database named after `prefix`, then
/// drops the database, also when `test` panics (the panic is then resumed). The database is
/// created and dropped on a runtime of its own, so `test` may build and run its own runtimes.
///
/// # Panics
/// As [`TempPg::create`], or with `test`'s panic.
pub fn with_temp_pg<R>(prefix: &str, test: impl FnOnce(&str) -> R) -> R {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let pg = rt.block_on(TempPg::create(prefix));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(pg.url())));
    rt.block_on(pg.drop_db());
    match outcome {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_the_name_and_keeps_the_query() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
