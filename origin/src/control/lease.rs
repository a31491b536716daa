//! Leases in the database (`leases`): work that one instance of the control plane at a time should do (training
//! the recommender) goes to whichever instance holds its lease. A lease is taken, or renewed by its holder, with
//! one conditional upsert that SQLite and PostgreSQL both run; it lapses `ttl` after its last renewal, so when
//! its holder stops (killed, cut off from the database) another instance takes it at its next try. The holder is
//! a random id per process, so a restarted process is a new holder.

use std::time::Duration;

use sqlx::AnyPool;

/// One named lease as this process tries to hold it.
pub struct Lease {
    pool: AnyPool,
    queries: crate::metrics::DbQueries,
    name: &'static str,
    holder: String,
    ttl_ms: i64,
}

impl Lease {
    pub fn new(
        pool: AnyPool,
        queries: crate::metrics::DbQueries,
        name: &'static str,
        ttl: Duration,
    ) -> Lease {
        Lease {
            pool,
            queries,
            name,
            holder: crate::control::accounts::random_hex(16),
            ttl_ms: ttl.as_millis().min(i64::MAX as u128) as i64,
        }
    }

    /// Takes the lease if nobody holds it or its holder let it lapse, or renews it if this process holds it;
    /// whether this process holds it now (until `now + ttl`, unix milliseconds).
    pub async fn hold(&self, now: i64) -> anyhow::Result<bool> {
        self.queries.count("lease");
        // Inserted when new; otherwise updated only where the row is ours or has lapsed. Either way one row is
        // written exactly when the lease is ours.
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
        )
        .bind(self.name)
        .bind(&self.holder)
        .bind(now.saturating_add(self.ttl_ms))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Lets the lease go at once if this process holds it (another instance takes it at its next try).
    pub async fn release(&self) -> anyhow::Result<()> {
        self.queries.count("lease");
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2")
            .bind(self.name)
            .bind(&self.holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_until_it_lapses_or_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/catalog.db", dir.path().display());
        let mut leases = Vec::new();
        for _ in 0..2 {
            let catalog = crate::control::catalog::Catalog::open(&url).await.unwrap();
            leases.push(Lease::new(
                catalog.pool().clone(),
                Default::default(),
                "test",
                Duration::from_secs(10),
            ));
        }
        let (a, b) = (&leases[0], &leases[1]);
        assert!(a.hold(1_000).await.unwrap(), "free: taken");
        assert!(!b.hold(1_001).await.unwrap(), "held by A");
        assert!(a.hold(5_000).await.unwrap(), "renewed by its holder");
        assert!(!b.hold(14_999).await.unwrap(), "renewed until 15 000");
        assert!(b.hold(15_000).await.unwrap(), "lapsed: B takes it");
        assert!(!a.hold(15_001).await.unwrap(), "now B's");
        b.release().await.unwrap();
        a.release().await.unwrap(); // not A's: nothing happens
        assert!(a.hold(15_002).await.unwrap(), "let go: A takes it back");
        // Another lease is another row.
        let other = Lease::new(
            b.pool.clone(),
            Default::default(),
            "other",
            Duration::from_secs(10),
        );
        assert!(other.hold(15_003).await.unwrap());
    }
}
