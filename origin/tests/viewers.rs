//! The viewer's side of the control plane over HTTP, on SQLite and on PostgreSQL: accounts (a duplicate email, a
//! short password), sign-in (a wrong password, the session cookie's attributes, the rate limit with
//! `Retry-After`), sign-out, profiles and their documents with optimistic concurrency (two writers racing on one
//! version: exactly one wins, the other gets 409 with the current version, nothing is lost), progress and
//! history, the home rows and similar titles, artwork, and playback refused without a profile, refused for
//! another account's profile, and bound to the caller's address with the play recorded.

use serde_json::{Value, json};
use testkit::{CurlResponse, PostgresServer, TempStore, curl, start_origin};

struct Api {
    base: String,
}

impl Api {
    fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        json: Option<&Value>,
    ) -> CurlResponse {
        testkit::call_api(&self.base, method, path, auth, json)
    }
}

#[test]
fn viewers_on_sqlite() {
    let data = tempfile::tempdir().unwrap();
    viewers(&format!(
        "[catalog]\nurl = \"sqlite://{}/catalog.db\"\n",
        data.path().display()
    ));
}

#[test]
fn viewers_on_postgresql() {
    let postgres = PostgresServer::start();
    viewers(&format!("[catalog]\nurl = \"{}\"\n", postgres.url()));
}

fn viewers(catalog: &str) {
    let store = TempStore::with_samples();
    let origin = start_origin(
        &store.url(),
        &format!(
            "{catalog}[accounts]\nsignin_max_failures = 3\n[playback]\nedges = [\"https://127.0.0.1:8443\"]\n\
             [[signing_key]]\nid = \"k1\"\nsecret = \"viewers-test signing secret, 32+ bytes\"\n"
        ),
    );
    let api = Api {
        base: origin.url("api_addr"),
    };

    // Accounts: created once, a short password refused.
    let ada = json!({"email": "Ada@Example.org", "password": "correct horse"});
    let created = api.call("POST", "/v1/accounts", None, Some(&ada));
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["profiles"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.call(
            "POST",
            "/v1/accounts",
            None,
            Some(&json!({"email": "ada@example.org", "password": "another one"}))
        )
        .status,
        409
    );
    let short = api.call(
        "POST",
        "/v1/accounts",
        None,
        Some(&json!({"email": "b@x", "password": "short"})),
    );
    assert_eq!(short.status, 400, "{}", short.text());
    assert!(
        short.json()["reason"]
            .as_str()
            .unwrap()
            .contains("at least 8")
    );
    let bob = json!({"email": "bob@example.org", "password": "bobs password"});
    assert_eq!(
        api.call("POST", "/v1/accounts", None, Some(&bob)).status,
        201
    );

    // Sign-in: a wrong password and an unknown email get the same 401; the right one a session cookie.
    let wrong = api.call(
        "POST",
        "/v1/sessions",
        None,
        Some(&json!({"email": "ada@example.org", "password": "wrong horse"})),
    );
    assert_eq!(wrong.status, 401);
    let nobody = api.call(
        "POST",
        "/v1/sessions",
        None,
        Some(&json!({"email": "eve@example.org", "password": "wrong horse"})),
    );
    assert_eq!(nobody.status, 401);
    assert_eq!(wrong.json()["reason"], nobody.json()["reason"]);
    let signed = api.call("POST", "/v1/sessions", None, Some(&ada));
    assert_eq!(signed.status, 201, "{}", signed.text());
    let cookie = signed
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    for attribute in [
        "cdn_session=",
        "HttpOnly",
        "SameSite=Lax",
        "Secure",
        "Path=/",
    ] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert_eq!(signed.header("cache-control"), Some("private, no-store"));
    let session = signed.json();
    let token = session["token"].as_str().unwrap().to_string();
    let profile = session["profiles"][0]["id"].as_str().unwrap().to_string();

    // The cookie alone opens the session, as the token does; nothing opens none.
    let cookie_pair = cookie.split(';').next().unwrap().to_string();
    let me = curl(&[
        "-H",
        &format!("Cookie: other=1; {cookie_pair}"),
        &format!("{}/v1/me", api.base),
    ]);
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["email"], "ada@example.org");
    assert_eq!(api.call("GET", "/v1/me", None, None).status, 401);
    assert_eq!(
        api.call("GET", "/v1/me", Some("not-a-session"), None)
            .status,
        401
    );

    // Rate limit: after 3 failures even the right password waits, with Retry-After.
    for _ in 0..3 {
        let r = api.call(
            "POST",
            "/v1/sessions",
            None,
            Some(&json!({"email": "bob@example.org", "password": "bad guess 1"})),
        );
        assert!(r.status == 401 || r.status == 429, "{}", r.text());
    }
    let limited = api.call("POST", "/v1/sessions", None, Some(&bob));
    assert_eq!(limited.status, 429, "{}", limited.text());
    let retry: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "{retry}");

    // Profiles: a second one; a stale write gets 409 with the current version.
    let kids = api.call(
        "POST",
        "/v1/profiles",
        Some(&token),
        Some(&json!({"name": "Kids"})),
    );
    assert_eq!(kids.status, 201, "{}", kids.text());
    let kids = kids.json()["id"].as_str().unwrap().to_string();
    let path = format!("/v1/profiles/{kids}");
    let renamed = api.call(
        "PUT",
        &path,
        Some(&token),
        Some(&json!({"version": 1, "name": "Children"})),
    );
    assert_eq!(renamed.status, 200, "{}", renamed.text());
    assert_eq!(renamed.json()["version"], 2);
    let stale = api.call(
        "PUT",
        &path,
        Some(&token),
        Some(&json!({"version": 1, "name": "Lost update"})),
    );
    assert_eq!(stale.status, 409, "{}", stale.text());
    assert_eq!(stale.json()["current_version"], 2);
    assert_eq!(stale.json()["current"]["name"], "Children");

    // Two writers racing on the same version, many times: one wins each round, the other is told, none lost.
    let ratings = format!("/v1/profiles/{profile}/ratings");
    let mut version = 0;
    for round in 0..8 {
        let outcomes: Vec<(u16, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|writer| {
                    let (api, ratings, token) = (&api, &ratings, &token);
                    s.spawn(move || {
                        let doc = json!({"version": version, "items": {format!("title-{round}-{writer}"): 1 + writer}});
                        let r = api.call("PUT", ratings, Some(token), Some(&doc));
                        (r.status, r.json())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<_> = outcomes.iter().filter(|(s, _)| *s == 200).collect();
        let lost: Vec<_> = outcomes.iter().filter(|(s, _)| *s == 409).collect();
        assert_eq!(
            (won.len(), lost.len()),
            (1, 1),
            "round {round}: {outcomes:?}"
        );
        assert_eq!(
            lost[0].1["current_version"], won[0].1["version"],
            "{outcomes:?}"
        );
        let now = api.call("GET", &ratings, Some(&token), None).json();
        assert_eq!(now, won[0].1, "the winner's document is the one kept");
        version = now["version"].as_i64().unwrap();
    }
    assert_eq!(version, 8);
    let bad = api.call(
        "PUT",
        &ratings,
        Some(&token),
        Some(&json!({"version": 8, "items": {"x": 9}})),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());

    // The limit holds per address too: another account, right password, from the same address, waits.
    let carol = json!({"email": "carol@example.org", "password": "carols password"});
    assert_eq!(
        api.call("POST", "/v1/accounts", None, Some(&carol)).status,
        201
    );
    let r = api.call("POST", "/v1/sessions", None, Some(&carol));
    assert_eq!(r.status, 429, "the address is limited too: {}", r.text());
    // Another account's session does not open this profile.
    let other = api.call(
        "GET",
        &format!("/v1/profiles/{profile}"),
        Some("not-a-session"),
        None,
    );
    assert_eq!(other.status, 401);

    // Progress → history → continue watching; a finished title leaves it.
    let progress = format!("/v1/profiles/{profile}/progress");
    let p = api.call(
        "POST",
        &progress,
        Some(&token),
        Some(&json!({"title": "test-pattern", "position_secs": 9.5, "duration_secs": 24})),
    );
    assert_eq!(p.status, 200, "{}", p.text());
    let history_of = |profile: &str, token: &str| {
        api.call(
            "GET",
            &format!("/v1/profiles/{profile}/history"),
            Some(token),
            None,
        )
        .json()
    };
    let history = history_of(&profile, &token);
    assert_eq!(history["items"][0]["title"], "test-pattern");
    assert_eq!(history["items"][0]["finished"], false);
    let home = api.call(
        "GET",
        &format!("/v1/profiles/{profile}/home"),
        Some(&token),
        None,
    );
    assert_eq!(home.status, 200, "{}", home.text());
    let home = home.json();
    let rows = home["rows"].as_array().unwrap();
    assert_eq!(rows[0]["id"], "continue", "{home}");
    assert_eq!(rows[0]["items"][0]["slug"], "test-pattern");
    assert_eq!(rows[0]["items"][0]["position_secs"], 9.5);
    assert!(
        rows.iter().any(|r| r["id"] == "because-test-pattern"),
        "{home}"
    );
    assert!(rows.iter().any(|r| r["id"] == "trending"), "{home}");
    assert_eq!(
        api.call("GET", &format!("/v1/profiles/{profile}/home"), None, None)
            .status,
        401
    );
    let unknown = api.call(
        "POST",
        &progress,
        Some(&token),
        Some(&json!({"title": "nope", "position_secs": 1, "duration_secs": 2})),
    );
    assert_eq!(unknown.status, 404);

    // Similar titles and artwork, for anyone.
    let similar = api.call("GET", "/v1/titles/test-pattern/similar", None, None);
    assert_eq!(similar.status, 200, "{}", similar.text());
    assert_eq!(similar.json()["similar"][0]["slug"], "mandelbrot");
    let art = api.call("GET", "/v1/titles/test-pattern/artwork", None, None);
    assert_eq!(art.status, 200);
    assert_eq!(art.header("content-type"), Some("image/jpeg"));
    assert_eq!(&art.body[..3], b"\xff\xd8\xff", "a JPEG");

    // Playback: refused without a session, without a profile, for a profile of another account; granted for
    // the viewer's own, bound to the address it came from, resuming where the profile stopped.
    let play = |auth: Option<&str>, doc: Value| api.call("POST", "/v1/playback", auth, Some(&doc));
    assert_eq!(play(None, json!({"title": "test-pattern"})).status, 401);
    let no_profile = play(Some(&token), json!({"title": "test-pattern"}));
    assert_eq!(no_profile.status, 400, "{}", no_profile.text());
    let dave = json!({"email": "dave@example.org", "password": "daves password"});
    let dave_profile =
        api.call("POST", "/v1/accounts", None, Some(&dave)).json()["profiles"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
    let foreign = play(
        Some(&token),
        json!({"title": "test-pattern", "profile": dave_profile}),
    );
    assert_eq!(foreign.status, 403, "{}", foreign.text());
    let forged = play(
        Some(&token),
        json!({"title": "test-pattern", "profile": profile, "client": "10.9.9.9"}),
    );
    assert_eq!(
        forged.status, 400,
        "a viewer cannot choose the bound address"
    );
    let granted = play(
        Some(&token),
        json!({"title": "test-pattern", "profile": profile}),
    );
    assert_eq!(granted.status, 200, "{}", granted.text());
    let granted = granted.json();
    assert_eq!(granted["resume_secs"], 9.5);
    let url = granted["edges"][0]["manifests"]["hls-ts"].as_str().unwrap();
    let token_part = url.split("/t/").nth(1).unwrap().split('/').next().unwrap();
    let client = token_part.split('.').nth(3).unwrap();
    assert_eq!(
        base64url(client),
        "127.0.0.1",
        "bound to the caller's address"
    );
    let mandelbrot = play(
        Some(&token),
        json!({"title": "mandelbrot", "profile": profile}),
    );
    assert_eq!(mandelbrot.status, 200, "{}", mandelbrot.text());
    assert_eq!(mandelbrot.json()["resume_secs"], 0.0);
    let history = history_of(&profile, &token);
    assert!(
        history["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["title"] == "mandelbrot"),
        "the play is recorded: {history}"
    );
    let service = api.call(
        "POST",
        "/v1/playback",
        Some(testkit::SERVICE_TOKEN),
        Some(&json!({"title": "test-pattern"})),
    );
    assert_eq!(service.status, 200, "{}", service.text());

    // Sign-out ends the session for the token and the cookie.
    let out = api.call("DELETE", "/v1/sessions/current", Some(&token), None);
    assert_eq!(out.status, 200, "{}", out.text());
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(api.call("GET", "/v1/me", Some(&token), None).status, 401);
    let metrics = curl(&[&format!("{}/metrics", origin.url("admin_addr"))]).text();
    for line in [
        "control_signins_total{outcome=\"limited\"}",
        "control_signins_total{outcome=\"refused\"}",
        "control_playback_requests_total{caller=\"viewer\"} 2",
        "control_playback_requests_total{caller=\"refused\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}");
    }
}

/// Decodes unpadded base64url text.
fn base64url(text: &str) -> String {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let bits: Vec<u8> = text.bytes().map(value).collect();
    let mut out = Vec::new();
    for chunk in bits.chunks(4) {
        let n = chunk.iter().fold(0u32, |n, &v| (n << 6) | v as u32) << (6 * (4 - chunk.len()));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    String::from_utf8(out).unwrap()
}
