//! The control plane as one of several instances behind the edge: answers that are the same for everyone say how
//! long the edge and browsers may keep them (and never depend on the caller's credentials), personal ones stay
//! `private, no-store`; behind a trusted proxy the client's address is the one it forwarded (token binding, the
//! sign-in limit), from anyone else `X-Forwarded-For` is ignored.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::{SERVICE_AUTH, TempStore, call_api_with, curl, signed_up, start_origin};

#[test]
fn shared_answers_say_how_long_they_keep_and_personal_ones_stay_private() {
    let store = TempStore::with_samples();
    let origin = start_origin(
        &store.url(),
        "[api]\nbrowser_max_age_secs = 7\ncdn_max_age_secs = 40\ncdn_stale_while_revalidate_secs = 50\n\
         not_found_max_age_secs = 3\n",
    );
    let api = origin.url("api_addr");
    let (token, profile) = signed_up(&api, "sharer@example.org");
    let cookie = format!("Cookie: cdn_session={token}");
    let bearer = format!("Authorization: Bearer {token}");

    for path in [
        "/v1/titles",
        "/v1/titles?genre=Test",
        "/v1/titles/test-pattern",
        "/v1/titles/test-pattern/assets",
        "/v1/titles/test-pattern/similar",
        "/v1/search?q=test%20patern",
        "/v1/home",
    ] {
        let anonymous = call_api_with(&api, "GET", path, &[], None);
        assert_eq!(anonymous.status, 200, "{path}: {}", anonymous.text());
        assert_eq!(
            anonymous.header("cache-control"),
            Some("public, max-age=7"),
            "{path}"
        );
        assert_eq!(
            anonymous.header("cdn-cache-control"),
            Some("max-age=40, stale-while-revalidate=50"),
            "{path}"
        );
        assert_eq!(anonymous.header("vary"), None, "{path}");
        assert_eq!(anonymous.header("set-cookie"), None, "{path}");
        let etag = anonymous.header("etag").expect("an ETag").to_string();
        // A signed-in viewer gets the very same answer: nothing shared reads who asked.
        let viewer = call_api_with(&api, "GET", path, &[&cookie, &bearer], None);
        assert_eq!(viewer.body, anonymous.body, "{path}");
        assert_eq!(viewer.header("etag"), Some(etag.as_str()), "{path}");
        assert_eq!(viewer.header("set-cookie"), None, "{path}");
        let revalidated = call_api_with(
            &api,
            "GET",
            path,
            &[&format!("If-None-Match: {etag}")],
            None,
        );
        assert_eq!(revalidated.status, 304, "{path}");
        assert_eq!(
            revalidated.header("cache-control"),
            Some("public, max-age=7"),
            "{path}"
        );
        assert_eq!(revalidated.header("etag"), Some(etag.as_str()), "{path}");
    }
    let home = call_api_with(&api, "GET", "/v1/home", &[], None).json();
    let rows: Vec<&str> = home["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rows.first(), Some(&"trending"), "{home}");
    assert!(
        !rows
            .iter()
            .any(|r| ["continue", "top-picks"].contains(r) || r.starts_with("because-")),
        "no personal rows: {home}"
    );

    // An unknown title: shared, briefly.
    let missing = call_api_with(&api, "GET", "/v1/titles/no-such-title", &[], None);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("cache-control"), Some("public, max-age=3"));
    assert_eq!(missing.header("cdn-cache-control"), Some("max-age=3"));
    // Artwork keeps its own public lifetime (the sample titles have none: a shared 404).
    let artwork = call_api_with(
        &api,
        "GET",
        "/v1/titles/test-pattern/artwork",
        &[&cookie],
        None,
    );
    assert!(
        artwork
            .header("cache-control")
            .is_some_and(|c| c.starts_with("public")),
        "{:?}",
        artwork.headers
    );

    // The web front end: revalidated by browsers, held briefly by the edge.
    for path in ["/", "/web/app.js"] {
        let file = call_api_with(&api, "GET", path, &[&cookie], None);
        assert_eq!(file.status, 200, "{path}");
        assert_eq!(file.header("cache-control"), Some("no-cache"), "{path}");
        assert_eq!(
            file.header("cdn-cache-control"),
            Some("max-age=40"),
            "{path}"
        );
        assert_eq!(file.header("set-cookie"), None, "{path}");
    }

    // Whatever reads the session is private and never stored.
    for (method, path) in [
        ("GET", "/v1/me".to_string()),
        ("GET", format!("/v1/profiles/{profile}")),
        ("GET", format!("/v1/profiles/{profile}/home")),
        ("GET", format!("/v1/profiles/{profile}/history")),
        ("GET", format!("/v1/profiles/{profile}/ratings")),
        ("GET", "/v1/edges".to_string()),
    ] {
        let personal = call_api_with(&api, method, &path, &[&bearer], None);
        assert_eq!(personal.status, 200, "{path}: {}", personal.text());
        assert_eq!(
            personal.header("cache-control"),
            Some("private, no-store"),
            "{path}"
        );
        assert_eq!(personal.header("cdn-cache-control"), None, "{path}");
    }
    let account = json!({"email": "sharer@example.org", "password": "a test password"});
    let signed = call_api_with(&api, "POST", "/v1/sessions", &[], Some(&account));
    assert_eq!(signed.header("cache-control"), Some("private, no-store"));
    let playback = call_api_with(
        &api,
        "POST",
        "/v1/playback",
        &[&bearer],
        Some(&json!({"title": "test-pattern", "profile": profile})),
    );
    assert_eq!(playback.status, 200, "{}", playback.text());
    assert_eq!(playback.header("cache-control"), Some("private, no-store"));
    let unauthorized = call_api_with(&api, "GET", "/v1/me", &[], None);
    assert_eq!(unauthorized.status, 401);
    assert_eq!(
        unauthorized.header("cache-control"),
        Some("private, no-store")
    );
}

const SIGNING_SECRET: &str = "instances-test signing secret, 32+ bytes";
/// A little over how old an instance's recent read of a viewer's documents may be (`docs::RECENT_MAX_AGE`).
const RECENT: Duration = Duration::from_millis(1_100);

/// The client a playback answer's first manifest URL is bound to, told by verifying its token as `client`.
fn bound_to(playback: &Value, client: &str) -> bool {
    let url = playback["edges"][0]["manifests"]
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("a manifest URL: {playback}"));
    let (_, after) = url.split_once("/t/").expect("a signed URL");
    let (token, path) = after.split_once('/').expect("token/path");
    let key = shared::token::SigningKey::new("k1", SIGNING_SECRET.as_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    shared::token::verify(&[key], token, &format!("/{path}"), client, now).is_ok()
}

#[test]
fn behind_a_trusted_proxy_the_client_is_the_forwarded_address() {
    let store = TempStore::with_samples();
    let keys = format!("[[signing_key]]\nid = \"k1\"\nsecret = \"{SIGNING_SECRET}\"\n");
    let behind = start_origin(
        &store.url(),
        &format!(
            "{keys}[api]\ntrusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\n\
             [accounts]\nsignin_max_failures = 3\n"
        ),
    );
    let api = behind.url("api_addr");
    let ask = |api: &str, forwarded: &str| {
        let r = call_api_with(
            api,
            "POST",
            "/v1/playback",
            &[SERVICE_AUTH, forwarded],
            Some(&json!({"title": "test-pattern"})),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    // The client wrote the first address; the edge (on loopback, trusted) appended the one it saw.
    let playback = ask(&api, "X-Forwarded-For: 6.6.6.6, 203.0.113.7");
    assert!(bound_to(&playback, "203.0.113.7"), "{playback}");
    assert!(!bound_to(&playback, "127.0.0.1"));
    assert!(!bound_to(&playback, "6.6.6.6"));
    // Garbage: the peer.
    let playback = ask(&api, "X-Forwarded-For: not an address");
    assert!(bound_to(&playback, "127.0.0.1"), "{playback}");

    // The sign-in limit counts the forwarded address: three failures from one client, with three emails, stop
    // that client, not another one behind the same edge.
    let from = |ip: &str| format!("X-Forwarded-For: {ip}");
    for email in ["a@example.org", "b@example.org", "c@example.org"] {
        let wrong = json!({"email": email, "password": "wrong password"});
        let r = call_api_with(
            &api,
            "POST",
            "/v1/sessions",
            &[&from("203.0.113.7")],
            Some(&wrong),
        );
        assert_eq!(r.status, 401, "{}", r.text());
    }
    let wrong = json!({"email": "d@example.org", "password": "wrong password"});
    let limited = call_api_with(
        &api,
        "POST",
        "/v1/sessions",
        &[&from("203.0.113.7")],
        Some(&wrong),
    );
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(limited.header("retry-after").is_some());
    let other = call_api_with(
        &api,
        "POST",
        "/v1/sessions",
        &[&from("198.51.100.9")],
        Some(&wrong),
    );
    assert_eq!(
        other.status,
        401,
        "another client is not limited: {}",
        other.text()
    );

    // Without trusted proxies (the default) a forwarded address is a claim anyone can make: ignored.
    let direct = start_origin(&store.url(), &keys);
    let playback = ask(&direct.url("api_addr"), "X-Forwarded-For: 203.0.113.7");
    assert!(bound_to(&playback, "127.0.0.1"), "{playback}");
    assert!(!bound_to(&playback, "203.0.113.7"));
}

/// A metric's value in Prometheus text: the line starting with `series` (name and labels); 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn origin_cli(config: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new(testkit::binary("origin"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "origin {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `done` every 50 ms for up to 20 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_title_is_read_from_the_database_once_until_the_catalog_changes() {
    let store = TempStore::with_samples();
    let origin = start_origin(&store.url(), "");
    let (api, admin) = (origin.url("api_addr"), origin.url("admin_addr"));
    let metrics = || curl(&[&format!("{admin}/metrics")]).text();
    let title_queries = || metric(&metrics(), "control_db_queries_total{op=\"title\"}");
    let details = || call_api_with(&api, "GET", "/v1/titles/test-pattern", &[], None);

    let before = title_queries();
    assert_eq!(details().status, 200);
    let one_read = title_queries() - before;
    assert!(one_read > 0.0, "reading a title is counted:\n{}", metrics());
    for _ in 0..50 {
        assert_eq!(details().status, 200);
    }
    // The similar titles and the assets ask for the same title; the details come from the instance's cache.
    assert_eq!(
        call_api_with(&api, "GET", "/v1/titles/test-pattern/similar", &[], None).status,
        200
    );
    assert_eq!(
        title_queries() - before,
        one_read,
        "51 reads of one title, one database read:\n{}",
        metrics()
    );
    // The other reads are counted too: a list, and the search index built at start.
    assert_eq!(
        call_api_with(&api, "GET", "/v1/titles", &[], None).status,
        200
    );
    let text = metrics();
    for op in ["titles_list", "search_docs"] {
        assert!(
            metric(&text, &format!("control_db_queries_total{{op=\"{op}\"}}")) >= 1.0,
            "{op} is counted:\n{text}"
        );
    }

    // A catalog change (the takedown tool, over the bus) drops the cached copy: the title is gone at once, and
    // back once restored, read from the database once more.
    origin_cli(&origin.config_path(), &["takedown", "test-pattern"]);
    eventually("the takedown reaches the API", || details().status == 404);
    origin_cli(
        &origin.config_path(),
        &["takedown", "test-pattern", "--restore"],
    );
    eventually("the restore reaches the API", || details().status == 200);
    // The database answers as soon as the restore is written; the change's event, which drops the cached copy
    // once more, may come a little later (a loaded machine): then the title is cached for good.
    eventually("the title cached again", || {
        let before = title_queries();
        (0..3).all(|_| details().status == 200) && title_queries() == before
    });
    let after_restore = title_queries();
    for _ in 0..20 {
        assert_eq!(details().status, 200);
    }
    assert_eq!(
        title_queries(),
        after_restore,
        "cached again after the change"
    );
}

#[test]
fn two_instances_share_their_state_on_sqlite() {
    let data = tempfile::tempdir().unwrap();
    two_instances_on_one_database(&format!(
        "[catalog]\nurl = \"sqlite://{}/catalog.db\"\n",
        data.path().display()
    ));
}

#[test]
fn two_instances_share_their_state_on_postgresql() {
    let postgres = testkit::PostgresServer::start();
    two_instances_on_one_database(&format!("[catalog]\nurl = \"{}\"\n", postgres.url()));
}

/// Successful trainings of the recommender on an instance.
fn trainings(admin: &str) -> f64 {
    let text = curl(&[&format!("{admin}/metrics")]).text();
    metric(&text, "control_recommender_trainings_total{outcome=\"ok\"}")
}

/// The first title like `alpha` on the instance at `api`.
fn first_similar(api: &str) -> Value {
    call_api_with(api, "GET", "/v1/titles/alpha/similar", &[], None).json()["similar"][0]["slug"]
        .clone()
}

/// Two instances on one database (`catalog`): an edge reporting to one is seen by the other, failed sign-ins on
/// one count on the other, and the recommender is trained by one of them at a time while both serve its model.
fn two_instances_on_one_database(catalog: &str) {
    const SECRET: &str = "instances-registration-secret";
    let store = TempStore::with_samples();
    // Metadata-only titles: charlie is the most popular and shares alpha's genre; bravo is neither.
    for (slug, genre, popularity) in [
        ("alpha", "drama", 10),
        ("bravo", "comedy", 1),
        ("charlie", "drama", 1000),
    ] {
        let meta = json!({
            "slug": slug, "title": slug.to_uppercase(), "genres": [genre], "popularity": popularity,
            "duration_secs": 600,
        });
        store.put(
            &format!("titles/{slug}/meta.json"),
            meta.to_string().as_bytes(),
        );
    }
    // Written a while ago, as a store's files are: a file written in the second it is registered is registered
    // again at the next start (its time cannot tell which came first).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let set_time = |slug: &str, secs: u64| {
        let touched = std::process::Command::new("touch")
            .arg("-d")
            .arg(format!("@{secs}"))
            .arg(store.path().join(format!("titles/{slug}/meta.json")))
            .status()
            .unwrap();
        assert!(touched.success());
    };
    for slug in ["alpha", "bravo", "charlie", "test-pattern", "mandelbrot"] {
        set_time(slug, now - 10);
    }
    let shared = format!(
        "{catalog}[fleet]\nregistration_secret = \"{SECRET}\"\n[accounts]\nsignin_max_failures = 3\n\
         [recs]\ntrain_secs = 3600\n"
    );
    let (a, b) = (
        start_origin(&store.url(), &shared),
        start_origin(&store.url(), &shared),
    );
    let (api_a, api_b) = (a.url("api_addr"), b.url("api_addr"));
    let (admin_a, admin_b) = (a.url("admin_addr"), b.url("admin_addr"));

    // The store's titles are registered by one instance: the other finds them registered, or the lease held.
    let registered = |server: &testkit::ServerProcess| {
        server.wait_for_event("origin::server", |e| e["message"] == "catalog opened")["registered"]
            .as_u64()
            .unwrap()
    };
    let mut counts = [registered(&a), registered(&b)];
    counts.sort_unstable();
    assert_eq!(counts, [0, 5], "2 samples and 3 metadata-only titles, once");
    // A title whose metadata changed is registered again by the next instance to start, and only it.
    store.put(
        "titles/bravo/meta.json",
        json!({"slug": "bravo", "title": "BRAVO", "genres": ["comedy"], "popularity": 2, "duration_secs": 600})
            .to_string()
            .as_bytes(),
    );
    set_time("bravo", now + 5);
    let c = start_origin(&store.url(), &shared);
    assert_eq!(registered(&c), 1);
    drop(c);

    // An edge reports to A; B sees it within a second or so, and places viewers on it.
    let report =
        json!({"region": "eu-west", "urls": ["https://edge1.example:8443"], "capacity": 100});
    let auth = format!("Authorization: Bearer {SECRET}");
    let put = call_api_with(&api_a, "PUT", "/v1/edges/edge1", &[&auth], Some(&report));
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(put.json()["registered"], true);
    eventually("B sees the edge A took", || {
        call_api_with(&api_b, "GET", "/v1/edges", &[], None).json()["edges"][0]["name"] == "edge1"
    });
    let edges = call_api_with(&api_b, "GET", "/v1/edges", &[], None).json();
    assert_eq!(edges["edges"][0]["healthy"], true, "{edges}");
    let playback = call_api_with(
        &api_b,
        "POST",
        "/v1/playback",
        &[SERVICE_AUTH],
        Some(&json!({"title": "test-pattern"})),
    );
    assert_eq!(playback.status, 200, "{}", playback.text());
    assert_eq!(
        playback.json()["edges"][0]["name"],
        "edge1",
        "{}",
        playback.text()
    );
    // Its next report, to B, is not a new registration.
    let again = call_api_with(&api_b, "PUT", "/v1/edges/edge1", &[&auth], Some(&report));
    assert_eq!(again.json()["registered"], false, "{}", again.text());

    // The recommender: trained once at the first start, by one of the two; the other loads that model.
    let total = || trainings(&admin_a) + trainings(&admin_b);
    eventually("a first training", || total() >= 1.0);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(total(), 1.0, "one training for both instances");

    // Histories written through B; a training asked for on B (whichever instance trains answers it).
    let viewer = json!({"email": "family@example.org", "password": "family password"});
    assert_eq!(
        call_api_with(&api_b, "POST", "/v1/accounts", &[], Some(&viewer)).status,
        201
    );
    let token = call_api_with(&api_b, "POST", "/v1/sessions", &[], Some(&viewer)).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let bearer = format!("Authorization: Bearer {token}");
    let mut profiles = vec![
        call_api_with(&api_b, "GET", "/v1/me", &[&bearer], None).json()["profiles"][0]["id"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    for name in ["two", "three", "four", "five"] {
        let r = call_api_with(
            &api_b,
            "POST",
            "/v1/profiles",
            &[&bearer],
            Some(&json!({"name": name})),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        profiles.push(r.json()["id"].as_str().unwrap().to_string());
    }
    for profile in &profiles {
        for title in ["alpha", "bravo"] {
            let progress = json!({"title": title, "position_secs": 600, "duration_secs": 600});
            let path = format!("/v1/profiles/{profile}/progress");
            assert_eq!(
                call_api_with(&api_b, "POST", &path, &[&bearer], Some(&progress)).status,
                200
            );
        }
    }
    assert_eq!(
        first_similar(&api_a),
        "charlie",
        "the catalog's fallback before the training"
    );
    let asked = curl(&["-X", "POST", &format!("{admin_b}/recs/train")]);
    assert_eq!(asked.status, 202, "{}", asked.text());
    eventually("the training asked for", || total() >= 2.0);
    // Both serve the new model: the holder at once, the other once it looked (every 2 s).
    eventually("both instances serve the trained model", || {
        first_similar(&api_a) == "bravo" && first_similar(&api_b) == "bravo"
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(total(), 2.0, "one training per request, on one instance");
    let loaded = |admin: &str| {
        metric(
            &curl(&[&format!("{admin}/metrics")]).text(),
            "control_recommender_models_loaded_total",
        )
    };
    // The instance that did not train loaded a model (only the newest, if both were published between two of
    // its looks).
    assert!(
        loaded(&admin_a) + loaded(&admin_b) >= 1.0,
        "the instance that did not train loaded the newest model"
    );

    // Failed sign-ins on A count on B (last: they stop the test's own address too).
    let account = json!({"email": "shared@example.org", "password": "the right one"});
    assert_eq!(
        call_api_with(&api_a, "POST", "/v1/accounts", &[], Some(&account)).status,
        201
    );
    let wrong = json!({"email": "shared@example.org", "password": "a wrong one"});
    for api in [&api_a, &api_b, &api_a] {
        assert_eq!(
            call_api_with(api, "POST", "/v1/sessions", &[], Some(&wrong)).status,
            401
        );
    }
    let limited = call_api_with(&api_b, "POST", "/v1/sessions", &[], Some(&account));
    assert_eq!(limited.status, 429, "{}", limited.text());
}

/// The statements of the viewers' documents and the titles, summed: what a viewer's request costs the database
/// (background work — training, sweeps, leases — counts under other names).
fn viewer_statements(text: &str) -> f64 {
    [
        "doc_get",
        "doc_get_many",
        "doc_create",
        "doc_replace",
        "doc_delete",
        "title",
    ]
    .iter()
    .map(|op| metric(text, &format!("control_db_queries_total{{op=\"{op}\"}}")))
    .sum()
}

/// Statements a viewer's plays cost: a start reads the session, profile and history together and writes the
/// play; within a second the instance answers from what it read; a start already recorded within a minute is
/// not written again; a resumed play writes nothing.
#[test]
fn a_viewers_playback_costs_a_read_and_a_write_and_less_when_repeated() {
    let store = TempStore::with_samples();
    let origin = start_origin(&store.url(), "");
    let (api, admin) = (origin.url("api_addr"), origin.url("admin_addr"));
    let statements = || viewer_statements(&curl(&[&format!("{admin}/metrics")]).text());
    let play_as = |token: &str, profile: &str, title: &str| {
        let cookie = format!("Cookie: cdn_session={token}");
        let r = call_api_with(
            &api,
            "POST",
            "/v1/playback",
            &[&cookie],
            Some(&json!({"title": title, "profile": profile})),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    // The titles' details are read once (the instance's cache), here by another viewer.
    let (other_token, other_profile) = signed_up(&api, "first@example.org");
    play_as(&other_token, &other_profile, "test-pattern");
    play_as(&other_token, &other_profile, "mandelbrot");
    let (token, profile) = signed_up(&api, "counted@example.org");
    let cookie = format!("Cookie: cdn_session={token}");
    let play = |title: &str| play_as(&token, &profile, title);
    let counted = |title: &str| {
        let before = statements();
        assert_eq!(play(title)["resume_secs"], 0.0);
        statements() - before
    };
    // Counts that rest on the last read being under a second old hold only when the machine kept up.
    let quick = |since: Instant| since.elapsed() < Duration::from_millis(800);
    std::thread::sleep(RECENT);
    assert_eq!(
        counted("test-pattern"),
        2.0,
        "a first start: one read, one write"
    );
    let since = Instant::now();
    let again = counted("test-pattern");
    let next = counted("mandelbrot");
    if quick(since) {
        assert_eq!(again, 0.0, "the same start again within a second: nothing");
        assert_eq!(
            next, 1.0,
            "another title's first start within a second: the write only"
        );
    }
    std::thread::sleep(RECENT);
    assert_eq!(
        counted("mandelbrot"),
        1.0,
        "a start recorded within the minute: the read only"
    );
    // Half-way through: the play resumes there and writes nothing.
    let progress = call_api_with(
        &api,
        "POST",
        &format!("/v1/profiles/{profile}/progress"),
        &[&cookie],
        Some(&json!({"title": "test-pattern", "position_secs": 30.0, "duration_secs": 60.0})),
    );
    assert!(progress.status < 300, "{}", progress.text());
    std::thread::sleep(RECENT);
    let before = statements();
    assert_eq!(play("test-pattern")["resume_secs"], 30.0);
    assert_eq!(
        statements() - before,
        1.0,
        "a resumed play reads once and writes nothing"
    );

    // What a signed-in request may not do is refused as before, each from the one read.
    let refused = |headers: &[&str], request: Value| {
        call_api_with(&api, "POST", "/v1/playback", headers, Some(&request)).status
    };
    assert_eq!(
        refused(
            &["Cookie: cdn_session=not-a-session"],
            json!({"title": "test-pattern", "profile": profile})
        ),
        401
    );
    assert_eq!(
        refused(
            &[&cookie],
            json!({"title": "test-pattern", "profile": "0123456789abcdef"})
        ),
        403
    );
    assert_eq!(refused(&[&cookie], json!({"title": "test-pattern"})), 400);
    assert_eq!(
        refused(
            &[&cookie],
            json!({"title": "test-pattern", "profile": profile, "client": "203.0.113.9"})
        ),
        400
    );
}
