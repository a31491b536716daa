//! Viewers' accounts, sessions and profiles, kept as documents (`control::docs`):
//! - `account/<email>`: `{id, email, password (an Argon2id PHC string), profiles: [ids], created}`;
//! - `session/<SHA-256 of the token, hex>`: `{account, email, expires}` — the token itself is never stored;
//! - `profile/<id>`: `{account, name, settings}`.
//!
//! Passwords are hashed with Argon2id (the `argon2` crate's defaults) on blocking threads, a bounded number at a
//! time. Sign-in failures are counted per email and per client address in the database (`signin_failures`, one
//! row a failure), so every instance of the control plane counts those the others saw: while a key has
//! [`SigninLimits::max_failures`] within the last window, further attempts are refused ([`signin_wait`], pure,
//! time passed in), whether or not the password is right; a success clears the email's failures.

use std::collections::HashMap;
use std::net::IpAddr;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde_json::{Value, json};

use crate::control::docs::{Doc, DocStore, WriteError};

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password and email accepted (hashing a megabyte is a cost an attacker chooses).
pub const MAX_PASSWORD_BYTES: usize = 256;
pub const MAX_EMAIL_BYTES: usize = 254;
/// Profiles an account may have.
pub const MAX_PROFILES: usize = 8;
/// Longest profile name.
pub const MAX_PROFILE_NAME_CHARS: usize = 40;
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "cdn_session";

/// How sign-in failures are limited.
#[derive(Debug, Clone, Copy)]
pub struct SigninLimits {
    pub max_failures: u32,
    pub window_secs: i64,
}

impl Default for SigninLimits {
    fn default() -> Self {
        SigninLimits {
            max_failures: 5,
            window_secs: 300,
        }
    }
}

/// How many seconds a key must wait before it may try again, given when its failures happened (`failures_at`,
/// unix seconds, any order; the newest `max_failures` are enough): none while fewer than `max_failures` fall in
/// the window `(now - window_secs, now]`, else until the oldest of the newest `max_failures` leaves it.
pub fn signin_wait(failures_at: &[i64], now: i64, limits: &SigninLimits) -> Option<i64> {
    let max = limits.max_failures.max(1) as usize;
    let mut within: Vec<i64> = failures_at
        .iter()
        .copied()
        .filter(|&at| at > now - limits.window_secs && at <= now)
        .collect();
    if within.len() < max {
        return None;
    }
    within.sort_unstable_by(|a, b| b.cmp(a));
    let wait = within[max - 1] + limits.window_secs - now;
    (wait > 0).then_some(wait)
}

/// The failed sign-ins in the database, by key.
struct SigninFailures {
    pool: sqlx::AnyPool,
    queries: crate::metrics::DbQueries,
    limits: SigninLimits,
}

impl SigninFailures {
    /// The longest wait among `keys` (empty keys skipped): one query for all of them, reading each key's newest
    /// `max_failures` failures within the window.
    async fn wait(&self, keys: &[String], now: i64) -> anyhow::Result<Option<i64>> {
        use sqlx::Row;
        let keys: Vec<&String> = keys.iter().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            return Ok(None);
        }
        let placeholders: Vec<String> = (0..keys.len()).map(|i| format!("${}", i + 3)).collect();
        // The placeholders are numbered here; the keys themselves are bound.
        let sql = format!(
            "SELECT key, at FROM (SELECT key, at, ROW_NUMBER() OVER (PARTITION BY key ORDER BY at DESC) AS n \
             FROM signin_failures WHERE at > $1 AND key IN ({})) newest WHERE n <= $2",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now - self.limits.window_secs)
            .bind(i64::from(self.limits.max_failures));
        for key in &keys {
            query = query.bind(key.as_str());
        }
        self.queries.count("signin_failures_read");
        let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
        for row in query.fetch_all(&self.pool).await? {
            by_key
                .entry(row.try_get(0)?)
                .or_default()
                .push(row.try_get(1)?);
        }
        Ok(by_key
            .values()
            .filter_map(|ats| signin_wait(ats, now, &self.limits))
            .max())
    }

    /// Records a failure of each of `keys` (empty keys skipped), in one statement.
    async fn failed(&self, keys: &[String], now: i64) -> anyhow::Result<()> {
        let keys: Vec<&String> = keys.iter().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            return Ok(());
        }
        let values: Vec<String> = (0..keys.len())
            .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
            .collect();
        let sql = format!(
            "INSERT INTO signin_failures (key, at) VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for key in &keys {
            query = query.bind(key.as_str()).bind(now);
        }
        self.queries.count("signin_failures_write");
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Forgets a key's failures (the email's, at a successful sign-in).
    async fn clear(&self, key: &str) -> anyhow::Result<()> {
        self.queries.count("signin_failures_write");
        sqlx::query("DELETE FROM signin_failures WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes the failures that no longer count; how many.
    async fn sweep(&self, now: i64) -> anyhow::Result<u64> {
        self.queries.count("signin_failures_sweep");
        let done = sqlx::query("DELETE FROM signin_failures WHERE at <= $1")
            .bind(now - self.limits.window_secs)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// An email as accounts are keyed: trimmed and lower-cased; None when it does not look like one.
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && email.len() <= MAX_EMAIL_BYTES
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(email)
}

/// Why a password is refused at sign-up, if it is.
pub fn password_problem(password: &str) -> Option<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        Some(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters"
        ))
    } else if password.len() > MAX_PASSWORD_BYTES {
        Some(format!(
            "the password must be at most {MAX_PASSWORD_BYTES} bytes"
        ))
    } else {
        None
    }
}

/// A profile name, trimmed; None when empty or too long or holding control characters.
pub fn profile_name(name: &str) -> Option<String> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_PROFILE_NAME_CHARS
        && !name.chars().any(char::is_control);
    ok.then(|| name.to_string())
}

/// A random identifier or secret: `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).expect("the system's random number generator");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A session token as stored: its SHA-256, hex.
pub fn token_digest(token: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

/// A hash no password is checked against for real: what sign-in verifies when the email is unknown.
fn unknown_account_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&random_hex(16)).unwrap_or_default())
}

pub fn password_matches(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A signed-in caller's session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub account: String,
    pub email: String,
    pub expires: i64,
}

/// A signed-in request about one of its profiles, as [`Accounts::session_with_profile`] reads it.
#[derive(Debug, Default)]
pub struct SignedInProfile {
    /// The live session and the token that opened it; `None`: not signed in.
    pub session: Option<(Session, String)>,
    /// The profile, when it is the session's account's.
    pub profile: Option<Doc>,
    /// The document beside the profile (only when the profile is the session's).
    pub beside: Option<Doc>,
}

/// Whether a string may be a session token at all (not looked up otherwise).
fn plausible_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= 128
}

/// What sign-in can end in.
#[derive(Debug)]
pub enum SigninError {
    /// Too many failures for this email or address: retry after that many seconds.
    Limited(i64),
    /// Unknown email or wrong password (the same answer for both).
    Wrong,
    Store(anyhow::Error),
}

/// What creating an account or a profile can end in.
#[derive(Debug)]
pub enum CreateError {
    Exists,
    Invalid(String),
    Store(anyhow::Error),
}

/// The accounts: their documents, the failed sign-ins and the bound on concurrent password hashing.
pub struct Accounts {
    pub docs: DocStore,
    pub session_ttl_secs: i64,
    failures: SigninFailures,
    hashing: tokio::sync::Semaphore,
}

/// Password hashes computed at once at most (each takes ~19 MiB and tens of milliseconds of a core).
const CONCURRENT_HASHES: usize = 2;

impl Accounts {
    /// The accounts in `docs`' database (the failed sign-ins beside the documents).
    pub fn new(docs: DocStore, session_ttl_secs: i64, limits: SigninLimits) -> Accounts {
        Accounts {
            failures: SigninFailures {
                pool: docs.pool().clone(),
                queries: docs.queries().clone(),
                limits,
            },
            docs,
            session_ttl_secs,
            hashing: tokio::sync::Semaphore::new(CONCURRENT_HASHES),
        }
    }

    async fn hash(&self, password: String) -> anyhow::Result<String> {
        let _permit = self.hashing.acquire().await?;
        tokio::task::spawn_blocking(move || hash_password(&password)).await?
    }

    async fn verify(&self, password: String, hash: String) -> anyhow::Result<bool> {
        let _permit = self.hashing.acquire().await?;
        Ok(tokio::task::spawn_blocking(move || password_matches(&password, &hash)).await?)
    }

    /// A new account with one profile (named after the email's local part); its document.
    pub async fn create_account(
        &self,
        email: &str,
        password: &str,
        now: i64,
    ) -> Result<Value, CreateError> {
        let email = normalize_email(email)
            .ok_or_else(|| CreateError::Invalid("the email must look like name@domain".into()))?;
        if let Some(problem) = password_problem(password) {
            return Err(CreateError::Invalid(problem));
        }
        if self
            .docs
            .get("account", &email)
            .await
            .map_err(CreateError::Store)?
            .is_some()
        {
            return Err(CreateError::Exists);
        }
        let hash = self
            .hash(password.to_string())
            .await
            .map_err(CreateError::Store)?;
        let account = random_hex(12);
        let profile = random_hex(8);
        let first_name =
            profile_name(email.split('@').next().unwrap_or("me")).unwrap_or_else(|| "me".into());
        let body = json!({
            "id": account, "email": email, "password": hash, "profiles": [profile], "created": now,
        });
        match self.docs.create("account", &email, &body, now).await {
            Ok(_) => {}
            Err(WriteError::Conflict(_)) => return Err(CreateError::Exists),
            Err(WriteError::Store(e)) => return Err(CreateError::Store(e)),
        }
        self.docs
            .create(
                "profile",
                &profile,
                &new_profile(&account, &first_name),
                now,
            )
            .await
            .map_err(|e| CreateError::Store(anyhow::anyhow!("{e}")))?;
        Ok(body)
    }

    /// Signs in: a new session token (returned once, stored only as its digest) and the account's document.
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        client: Option<IpAddr>,
        now: i64,
    ) -> Result<(String, Session, Value), SigninError> {
        let email = normalize_email(email).unwrap_or_else(|| email.trim().to_lowercase());
        let keys = [
            format!("email:{email}"),
            client.map_or_else(String::new, |ip| format!("ip:{ip}")),
        ];
        if let Some(wait) = self
            .failures
            .wait(&keys, now)
            .await
            .map_err(SigninError::Store)?
        {
            return Err(SigninError::Limited(wait));
        }
        let account = self
            .docs
            .get("account", &email)
            .await
            .map_err(SigninError::Store)?;
        // An unknown email costs the same hash as a known one: the time taken does not say which emails exist.
        let right = match (&account, password.len() <= MAX_PASSWORD_BYTES) {
            (Some(doc), true) => {
                let hash = doc.body["password"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                self.verify(password.to_string(), hash)
                    .await
                    .map_err(SigninError::Store)?
            }
            (None, true) => {
                self.verify(password.to_string(), unknown_account_hash().to_string())
                    .await
                    .map_err(SigninError::Store)?;
                false
            }
            _ => false,
        };
        let (Some(account), true) = (account, right) else {
            self.failures
                .failed(&keys, now)
                .await
                .map_err(SigninError::Store)?;
            return Err(SigninError::Wrong);
        };
        self.failures
            .clear(&keys[0])
            .await
            .map_err(SigninError::Store)?;
        let token = random_hex(32);
        let session = Session {
            account: account.body["id"].as_str().unwrap_or_default().to_string(),
            email: email.clone(),
            expires: now + self.session_ttl_secs,
        };
        let body =
            json!({ "account": session.account, "email": email, "expires": session.expires });
        self.docs
            .create("session", &token_digest(&token), &body, now)
            .await
            .map_err(|e| SigninError::Store(anyhow::anyhow!("{e}")))?;
        Ok((token, session, account.body))
    }

    /// The live session a token opens, if any (an expired one is deleted).
    pub async fn session(&self, token: &str, now: i64) -> anyhow::Result<Option<Session>> {
        if !plausible_token(token) {
            return Ok(None);
        }
        let digest = token_digest(token);
        let doc = self.docs.get("session", &digest).await?;
        self.live_session(&digest, doc, now).await
    }

    /// What a signed-in request about one profile needs, read in one statement (or none, when this instance
    /// read them within [`RECENT_MAX_AGE`](super::docs::RECENT_MAX_AGE)): the first of `tokens` that opens a
    /// live session (with that token), the profile `profile` if it is that session's account's, and the
    /// document `(kind, profile)` beside it (the profile's history, say).
    pub async fn session_with_profile(
        &self,
        tokens: &[String],
        profile: &str,
        kind: &str,
        now: i64,
    ) -> anyhow::Result<SignedInProfile> {
        let digests: Vec<(String, &String)> = tokens
            .iter()
            .filter(|t| plausible_token(t))
            .map(|t| (token_digest(t), t))
            .collect();
        let mut wanted: Vec<(&str, &str)> = digests
            .iter()
            .map(|(digest, _)| ("session", digest.as_str()))
            .collect();
        wanted.push(("profile", profile));
        wanted.push((kind, profile));
        let mut found = self.docs.get_many_recent(&wanted).await?;
        let beside = found.pop().flatten();
        let profile_doc = found.pop().flatten();
        let mut session = None;
        for ((digest, token), doc) in digests.iter().zip(found) {
            if let Some(live) = self.live_session(digest, doc, now).await? {
                session = Some((live, token.to_string()));
                break;
            }
        }
        let owned = session.as_ref().and_then(|(s, _)| {
            profile_doc.filter(|doc| doc.body["account"].as_str() == Some(s.account.as_str()))
        });
        let beside = owned.as_ref().and(beside);
        Ok(SignedInProfile {
            session,
            profile: owned,
            beside,
        })
    }

    /// The session a stored session document is, unless it has expired (then it is deleted).
    async fn live_session(
        &self,
        digest: &str,
        doc: Option<Doc>,
        now: i64,
    ) -> anyhow::Result<Option<Session>> {
        let Some(doc) = doc else {
            return Ok(None);
        };
        let session = Session {
            account: doc.body["account"].as_str().unwrap_or_default().to_string(),
            email: doc.body["email"].as_str().unwrap_or_default().to_string(),
            expires: doc.body["expires"].as_i64().unwrap_or(0),
        };
        if session.expires <= now {
            self.docs.delete("session", digest).await?;
            return Ok(None);
        }
        Ok(Some(session))
    }

    /// Deletes the sessions past their lifetime (a session is written once, at sign-in); how many. Run every
    /// so often, so sessions never looked up again do not pile up.
    pub async fn sweep_sessions(&self, now: i64) -> anyhow::Result<u64> {
        self.docs
            .delete_older("session", now - self.session_ttl_secs)
            .await
    }

    /// Deletes the failed sign-ins that no longer count (run with the sessions' sweep); how many.
    pub async fn sweep_failures(&self, now: i64) -> anyhow::Result<u64> {
        self.failures.sweep(now).await
    }

    pub async fn sign_out(&self, token: &str) -> anyhow::Result<bool> {
        self.docs.delete("session", &token_digest(token)).await
    }

    pub async fn account(&self, session: &Session) -> anyhow::Result<Option<Doc>> {
        self.docs.get("account", &session.email).await
    }

    /// The account's profiles, each `{id, name, version, settings}`.
    pub async fn profiles(&self, session: &Session) -> anyhow::Result<Vec<Value>> {
        let Some(account) = self.account(session).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for id in account.body["profiles"].as_array().into_iter().flatten() {
            let Some(id) = id.as_str() else { continue };
            if let Some(doc) = self.docs.get("profile", id).await? {
                out.push(profile_view(id, &doc));
            }
        }
        Ok(out)
    }

    /// A profile of the session's account; None when it does not exist or is another account's.
    pub async fn own_profile(&self, session: &Session, id: &str) -> anyhow::Result<Option<Doc>> {
        let doc = self.docs.get("profile", id).await?;
        Ok(doc.filter(|doc| doc.body["account"].as_str() == Some(session.account.as_str())))
    }

    /// Adds a profile to the session's account.
    pub async fn add_profile(
        &self,
        session: &Session,
        name: &str,
        now: i64,
    ) -> Result<Value, CreateError> {
        let name = profile_name(name).ok_or_else(|| {
            CreateError::Invalid(format!(
                "a profile's name is 1 to {MAX_PROFILE_NAME_CHARS} characters"
            ))
        })?;
        let id = random_hex(8);
        let mut full = false;
        self.docs
            .update("account", &session.email, now, |body| {
                let mut body = body.cloned().unwrap_or(Value::Null);
                if let Some(list) = body["profiles"].as_array_mut() {
                    full = list.len() >= MAX_PROFILES;
                    if !full {
                        list.push(json!(id));
                    }
                }
                body
            })
            .await
            .map_err(|e| CreateError::Store(anyhow::anyhow!("{e}")))?;
        if full {
            return Err(CreateError::Invalid(format!(
                "an account has {MAX_PROFILES} profiles at most"
            )));
        }
        let doc = self
            .docs
            .create("profile", &id, &new_profile(&session.account, &name), now)
            .await
            .map_err(|e| CreateError::Store(anyhow::anyhow!("{e}")))?;
        Ok(profile_view(&id, &doc))
    }
}

fn new_profile(account: &str, name: &str) -> Value {
    json!({
        "account": account,
        "name": name,
        "settings": { "captions": true, "autoplay_next": true },
    })
}

/// A profile as the API shows it.
pub fn profile_view(id: &str, doc: &Doc) -> Value {
    json!({
        "id": id,
        "name": doc.body["name"],
        "version": doc.version,
        "settings": doc.body["settings"],
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn failures_past_the_limit_refuse_until_the_window_passes() {
        let limits = SigninLimits {
            max_failures: 3,
            window_secs: 60,
        };
        let mut failures = Vec::new();
        for t in 0..3 {
            assert_eq!(signin_wait(&failures, 100 + t, &limits), None);
            failures.push(100 + t);
        }
        assert_eq!(signin_wait(&failures, 103, &limits), Some(57));
        assert_eq!(
            signin_wait(&[], 103, &limits),
            None,
            "other keys unaffected"
        );
        assert_eq!(signin_wait(&failures, 159, &limits), Some(1));
        assert_eq!(
            signin_wait(&failures, 160, &limits),
            None,
            "the window passed"
        );
        // A failure after the window: the two newer ones still count, so one more failure refuses again, until
        // the oldest of the three newest leaves the window.
        failures.push(160);
        assert_eq!(signin_wait(&failures, 160, &limits), Some(1));
        assert_eq!(signin_wait(&failures, 161, &limits), None);
        // Order does not matter; failures from a clock ahead of this one do not count yet.
        assert_eq!(signin_wait(&[102, 100, 101], 103, &limits), Some(57));
        assert_eq!(signin_wait(&[100, 101, 500], 103, &limits), None);
        // More failures than the limit (racing attempts): the wait runs from the newest `max_failures`.
        assert_eq!(signin_wait(&[100, 110, 120, 130], 131, &limits), Some(39));
    }

    #[tokio::test]
    async fn failures_are_counted_in_the_database_for_every_instance() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/catalog.db", dir.path().display());
        let limits = SigninLimits {
            max_failures: 3,
            window_secs: 300,
        };
        // Two instances: their own pools, one database file.
        let mut instances = Vec::new();
        for _ in 0..2 {
            let catalog = crate::control::catalog::Catalog::open(&url).await.unwrap();
            instances.push(Accounts::new(catalog.docs(), 3600, limits));
        }
        let (a, b) = (&instances[0], &instances[1]);
        a.create_account("v@x.org", "long enough", 1_000)
            .await
            .unwrap();
        let client = Some("203.0.113.7".parse().unwrap());
        for (instance, t) in [(a, 1_000), (b, 1_001), (a, 1_002)] {
            assert!(matches!(
                instance.sign_in("v@x.org", "wrong one!", client, t).await,
                Err(SigninError::Wrong)
            ));
        }
        // The third failure was on A; B refuses, even the right password, for the rest of the window.
        match b.sign_in("v@x.org", "long enough", None, 1_003).await {
            Err(SigninError::Limited(wait)) => assert_eq!(wait, 297),
            other => panic!("{other:?}"),
        }
        // The address too, for another email.
        assert!(matches!(
            a.sign_in("w@x.org", "anything at all", client, 1_003).await,
            Err(SigninError::Limited(_))
        ));
        // Once the window passed: signed in on B, which clears the email's failures for A as well.
        b.sign_in("v@x.org", "long enough", None, 1_301)
            .await
            .unwrap();
        assert!(matches!(
            a.sign_in("v@x.org", "wrong one!", None, 1_302).await,
            Err(SigninError::Wrong)
        ));
        assert!(
            a.sign_in("v@x.org", "long enough", None, 1_303)
                .await
                .is_ok()
        );
        // The sweep deletes what no longer counts: the address's three, past the window.
        assert_eq!(a.sweep_failures(1_303).await.unwrap(), 3);
        assert_eq!(b.sweep_failures(2_000).await.unwrap(), 0);
    }

    #[test]
    fn emails_passwords_and_names_are_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.ORG "),
            Some("ada@example.org".into())
        );
        for bad in ["", "ada", "@x", "ada@", "a da@x", "a\u{0}@x"] {
            assert_eq!(normalize_email(bad), None, "{bad:?}");
        }
        assert!(normalize_email(&format!("{}@x", "a".repeat(300))).is_none());
        assert!(password_problem("short").is_some());
        assert!(password_problem("long enough").is_none());
        assert!(password_problem(&"x".repeat(300)).is_some());
        assert_eq!(profile_name("  Kids "), Some("Kids".into()));
        assert_eq!(profile_name(" "), None);
        assert_eq!(profile_name(&"x".repeat(41)), None);
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(password_matches("correct horse", &hash));
        assert!(!password_matches("correct horsE", &hash));
        assert!(!password_matches("correct horse", "not a hash"));
        assert_ne!(hash, hash_password("correct horse").unwrap(), "salted");
    }

    async fn accounts() -> Accounts {
        let catalog = crate::control::catalog::Catalog::open("sqlite::memory:")
            .await
            .unwrap();
        Accounts::new(
            DocStore::new(catalog.pool().clone(), catalog.backend),
            3600,
            SigninLimits::default(),
        )
    }

    #[tokio::test]
    async fn a_session_lasts_its_lifetime_and_no_longer() {
        let accounts = accounts().await;
        accounts
            .create_account("v@x.org", "long enough", 1_000)
            .await
            .unwrap();
        let (token, session, _) = accounts
            .sign_in("V@x.org", "long enough", None, 1_000)
            .await
            .unwrap();
        assert_eq!(session.expires, 4_600);
        assert_eq!(
            accounts.session(&token, 4_599).await.unwrap(),
            Some(session)
        );
        assert_eq!(accounts.session(&token, 4_600).await.unwrap(), None);
        // An expired session is deleted: it does not come back at an earlier clock either.
        assert_eq!(accounts.session(&token, 1_000).await.unwrap(), None);
        // Sessions never looked up again are swept once past their lifetime.
        let (other, _, _) = accounts
            .sign_in("v@x.org", "long enough", None, 2_000)
            .await
            .unwrap();
        assert_eq!(accounts.sweep_sessions(5_599).await.unwrap(), 0);
        assert_eq!(accounts.sweep_sessions(5_601).await.unwrap(), 1);
        assert_eq!(accounts.session(&other, 2_001).await.unwrap(), None);
        assert!(matches!(
            accounts.sign_in("v@x.org", "wrong one!", None, 1_000).await,
            Err(SigninError::Wrong)
        ));
    }

    /// Two instances over one database: each answers a signed-in request's documents from what it read
    /// recently, sees its own writes at once and the other's once its copy is too old. (Ages are given, not
    /// waited for: a long one stands for "within the age", zero for "past it".)
    #[tokio::test]
    async fn recent_reads_see_their_own_writes_at_once_and_others_once_too_old() {
        let one = accounts().await;
        let other = DocStore::new(one.docs.pool().clone(), "sqlite");
        let docs = &one.docs;
        let (young, old) = (Duration::from_secs(3600), Duration::ZERO);
        docs.create("history", "p", &json!({"n": 1}), 1)
            .await
            .unwrap();
        let wanted = [("history", "p"), ("profile", "p")];
        let read = docs.get_many_within(&wanted, young).await.unwrap();
        assert_eq!(read[0].as_ref().unwrap().body, json!({"n": 1}));
        assert_eq!(read[1], None);
        // The other instance writes: this one still answers from its recent read.
        other
            .replace("history", "p", 1, &json!({"n": 2}), 2)
            .await
            .unwrap();
        let read = docs.get_many_within(&wanted, young).await.unwrap();
        assert_eq!(read[0].as_ref().unwrap().version, 1);
        // A write from that stale copy is refused by its version, with the current document.
        match docs.replace("history", "p", 1, &json!({"n": 3}), 3).await {
            Err(WriteError::Conflict(Some(now))) => assert_eq!(now.version, 2),
            other => panic!("{other:?}"),
        }
        // Its own write is read back at once; the other's once the copy is too old.
        docs.replace("history", "p", 2, &json!({"n": 3}), 3)
            .await
            .unwrap();
        let read = docs.get_many_within(&wanted, young).await.unwrap();
        assert_eq!(read[0].as_ref().unwrap().body, json!({"n": 3}));
        other
            .create("profile", "p", &json!({"account": "a"}), 4)
            .await
            .unwrap();
        assert_eq!(docs.get_many_within(&wanted, young).await.unwrap()[1], None);
        let read = docs.get_many_within(&wanted, old).await.unwrap();
        assert_eq!(read[1].as_ref().unwrap().body, json!({"account": "a"}));
        // A delete (a sign-out) is seen at once by the instance that made it.
        docs.delete("profile", "p").await.unwrap();
        assert_eq!(docs.get_many_within(&wanted, young).await.unwrap()[1], None);
    }

    #[tokio::test]
    async fn a_stale_version_is_refused_with_the_current_document() {
        let accounts = accounts().await;
        let docs = &accounts.docs;
        let first = docs
            .create("list", "p", &json!({"items": []}), 1)
            .await
            .unwrap();
        assert_eq!(first.version, 1);
        assert!(matches!(
            docs.create("list", "p", &json!({}), 2).await,
            Err(WriteError::Conflict(Some(Doc { version: 1, .. })))
        ));
        let second = docs
            .replace("list", "p", 1, &json!({"items": ["a"]}), 3)
            .await
            .unwrap();
        assert_eq!(second.version, 2);
        match docs
            .replace("list", "p", 1, &json!({"items": ["b"]}), 4)
            .await
        {
            Err(WriteError::Conflict(Some(current))) => assert_eq!(current, second),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            docs.replace("list", "q", 1, &json!({}), 4).await,
            Err(WriteError::Conflict(None))
        ));
        // The server's own merge: read, change, write.
        let merged = docs
            .update("list", "p", 5, |body| {
                let mut body = body.cloned().unwrap();
                body["items"].as_array_mut().unwrap().push(json!("c"));
                body
            })
            .await
            .unwrap();
        assert_eq!(merged.body, json!({"items": ["a", "c"]}));
        assert_eq!(merged.version, 3);
    }

    #[test]
    fn tokens_are_random_and_stored_as_digests() {
        let (a, b) = (random_hex(32), random_hex(32));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(
            token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
