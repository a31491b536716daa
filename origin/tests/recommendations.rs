//! The recommender end to end: viewing histories written through the API are what a training (asked for on the
//! admin listener) learns from, and the home rows and similar titles then come from the trained model rather
//! than the catalog's popularity: five profiles watched `alpha` and then `bravo`; a sixth watched `alpha`, and its
//! top pick is `bravo`, though `charlie` is the catalog's most popular title and shares `alpha`'s genre.

use serde_json::json;
use testkit::{TempStore, call_api, curl, start_origin};

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn home_rows_and_similar_titles_come_from_the_trained_model() {
    let store = TempStore::with_samples();
    // Metadata-only titles: charlie is the most popular and shares alpha's genre; bravo is neither.
    for (slug, genre, popularity) in [
        ("alpha", "drama", 10),
        ("bravo", "comedy", 1),
        ("charlie", "drama", 1000),
        ("delta", "comedy", 500),
        ("echo", "horror", 5),
    ] {
        let meta = json!({
            "slug": slug, "title": slug.to_uppercase(), "year": 2020, "genres": [genre],
            "popularity": popularity, "duration_secs": 600,
        });
        store.put(
            &format!("titles/{slug}/meta.json"),
            meta.to_string().as_bytes(),
        );
    }
    let origin = start_origin(
        &store.url(),
        "[admin]\nbearer_token = \"admin-token-for-recs\"\n[recs]\ntrain_secs = 3600\n",
    );
    let api = origin.url("api_addr");
    let admin = origin.url("admin_addr");

    let (token, first) = testkit::signed_up(&api, "family@example.org");
    let mut profiles = vec![first];
    for name in ["two", "three", "four", "five", "six"] {
        let r = call_api(
            &api,
            "POST",
            "/v1/profiles",
            Some(&token),
            Some(&json!({"name": name})),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        profiles.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let watch = |profile: &str, title: &str| {
        let doc = json!({"title": title, "position_secs": 600, "duration_secs": 600});
        let r = call_api(
            &api,
            "POST",
            &format!("/v1/profiles/{profile}/progress"),
            Some(&token),
            Some(&doc),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    for profile in &profiles[..5] {
        watch(profile, "alpha");
        watch(profile, "bravo");
    }
    let sixth = &profiles[5];
    watch(sixth, "alpha");

    // Before a model has learnt the histories, the fallbacks follow the catalog: charlie, alpha's genre.
    let before = call_api(&api, "GET", "/v1/titles/alpha/similar", None, None).json();
    assert_eq!(before["similar"][0]["slug"], "charlie", "{before}");

    let metrics_url = format!("{admin}/metrics");
    let auth = "Authorization: Bearer admin-token-for-recs";
    let trained = |text: &str| metric(text, "control_recommender_trainings_total{outcome=\"ok\"}");
    let done_before = trained(&curl(&["-H", auth, &metrics_url]).text());
    assert_eq!(
        curl(&["-X", "POST", &format!("{admin}/recs/train")]).status,
        401
    );
    let asked = curl(&["-X", "POST", "-H", auth, &format!("{admin}/recs/train")]);
    assert_eq!(asked.status, 202, "{}", asked.text());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let text = curl(&["-H", auth, &metrics_url]).text();
        if trained(&text) > done_before || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(trained(&text) > done_before, "a training finished:\n{text}");
    assert!(
        metric(&text, "control_recommender_interactions") >= 11.0,
        "{text}"
    );

    let similar = call_api(&api, "GET", "/v1/titles/alpha/similar", None, None).json();
    assert_eq!(similar["similar"][0]["slug"], "bravo", "{similar}");
    let home = call_api(
        &api,
        "GET",
        &format!("/v1/profiles/{sixth}/home"),
        Some(&token),
        None,
    )
    .json();
    let row = |id: &str| -> Vec<String> {
        home["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| {
                r["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["slug"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let picks = row("top-picks");
    assert_eq!(picks.first().map(String::as_str), Some("bravo"), "{home}");
    assert!(
        !picks.contains(&"alpha".to_string()),
        "a finished title is left out: {home}"
    );
    assert_eq!(
        row("because-alpha").first().map(String::as_str),
        Some("bravo"),
        "{home}"
    );
    let trending = row("trending");
    assert_eq!(trending[..2], ["alpha", "bravo"], "{home}");
}
