//! The public API on small inputs whose answers are worked out by hand (the models' own arithmetic is tested
//! in `neighbours.rs` and `linear.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::*;

fn title(item: &str, genres: &[&str]) -> ItemInfo {
    ItemInfo {
        item: item.into(),
        genres: genres.iter().map(|genre| genre.to_string()).collect(),
    }
}

fn view(user: &str, item: &str, at: i64) -> Interaction {
    Interaction {
        user: user.into(),
        item: item.into(),
        at,
        weight: 1.0,
        finished: true,
    }
}

fn history(items: &[(&str, i64)]) -> Vec<(String, i64)> {
    items
        .iter()
        .map(|&(item, at)| (item.to_string(), at))
        .collect()
}

fn names(list: &[(String, f32)]) -> Vec<&str> {
    list.iter().map(|(item, _)| item.as_str()).collect()
}

fn nothing() -> HashSet<String> {
    HashSet::new()
}

fn assert_scores(list: &[(String, f32)], expected: &[(&str, f32)]) {
    assert_eq!(
        names(list),
        expected.iter().map(|(item, _)| *item).collect::<Vec<_>>(),
        "{list:?}"
    );
    for ((_, score), (item, want)) in list.iter().zip(expected) {
        assert!(
            (score - want).abs() < 1e-5,
            "{item}: {score} ≠ {want} in {list:?}"
        );
    }
}

/// Five titles; t4 has no viewers.
fn catalog() -> Vec<ItemInfo> {
    vec![
        title("t0", &["Drama", "Crime"]),
        title("t1", &["Comedy"]),
        title("t2", &["Comedy", "Drama"]),
        title("t3", &["Horror"]),
        title("t4", &["Drama", "Crime", "Thriller"]),
    ]
}

/// The 4 users × 5 titles of `neighbours.rs` (u0 = t0 t1, u1 = t0 t1 t2, u2 = t1 t2 t3, u3 = t0 t3, in time
/// order): popularity t0 3, t1 3, t2 2, t3 2, t4 0; cosines t0~t1 2/3, t0~t2 = t0~t3 = t1~t3 = 1/√6,
/// t1~t2 2/√6, t2~t3 1/2.
fn four_users() -> Vec<Interaction> {
    let mut views = Vec::new();
    for (user, items) in [
        ("u0", &["t0", "t1"][..]),
        ("u1", &["t0", "t1", "t2"]),
        ("u2", &["t1", "t2", "t3"]),
        ("u3", &["t0", "t3"]),
    ] {
        for (at, item) in items.iter().enumerate() {
            views.push(view(user, item, 100 + at as i64));
        }
    }
    views
}

fn train(kind: ModelKind, interactions: &[Interaction], params: &TrainParams) -> Model {
    Model::train(kind, interactions, &catalog(), params, 1_000)
}

#[test]
fn popularity_counts_viewers_breaks_ties_by_name_and_leaves_out_history_and_exclusions() {
    let model = train(
        ModelKind::Popularity,
        &four_users(),
        &TrainParams::default(),
    );
    // t0 and t1 have 3 viewers, t2 and t3 2: ties go by name. t1 is in the history.
    let list = model.recommend(&history(&[("t1", 5)]), 10, &nothing());
    assert_scores(&list, &[("t0", 3.0), ("t2", 2.0), ("t3", 2.0), ("t4", 0.0)]);
    let exclude: HashSet<String> = ["t2".to_string(), "not-a-title".to_string()].into();
    assert_eq!(
        names(&model.recommend(&history(&[("t1", 5)]), 10, &exclude)),
        ["t0", "t3", "t4"]
    );
    assert_eq!(
        names(&model.recommend(&history(&[("t1", 5)]), 2, &nothing())),
        ["t0", "t2"]
    );
    assert!(
        model
            .recommend(&history(&[("t1", 5)]), 0, &nothing())
            .is_empty()
    );
    // The catalog's order does not change the order of ties.
    let mut reversed = catalog();
    reversed.reverse();
    let other = Model::train(
        ModelKind::Popularity,
        &four_users(),
        &reversed,
        &TrainParams::default(),
        1_000,
    );
    assert_eq!(
        other.recommend(&history(&[("t1", 5)]), 10, &nothing()),
        list
    );
}

#[test]
fn item_knn_sums_the_similarities_to_the_history() {
    let model = train(ModelKind::ItemKnn, &four_users(), &TrainParams::default());
    // History t0, t3: t1 = 2/3 + 1/√6, t2 = 1/√6 + 1/2; t4 is similar to nothing: popularity fills the list.
    let r6 = 1.0 / 6f32.sqrt();
    let list = model.recommend(&history(&[("t0", 1), ("t3", 2)]), 10, &nothing());
    assert_scores(
        &list,
        &[("t1", 2.0 / 3.0 + r6), ("t2", r6 + 0.5), ("t4", 0.0)],
    );
    // One neighbour kept per title: t0 keeps t1 (2/3), t3 keeps t2 (1/2).
    let one = TrainParams {
        knn_neighbours: 1,
        ..TrainParams::default()
    };
    let model = train(ModelKind::ItemKnn, &four_users(), &one);
    let list = model.recommend(&history(&[("t0", 1), ("t3", 2)]), 10, &nothing());
    assert_scores(&list, &[("t1", 2.0 / 3.0), ("t2", 0.5), ("t4", 0.0)]);
}

/// a, b, c: u0 watched a and b, u1 a, u2 b, u3 c. XᵀX over (a, b, c) = [[2, 1, 0], [1, 2, 0], [0, 0, 1]];
/// λ = 1: the (a, b) block of G is [[3, 1], [1, 3]], P = [[3, −1], [−1, 3]] / 8, B[a][b] = (1/8) / (3/8) = 1/3;
/// c is independent of both: B[a][c] = 0.
fn ease_fixture() -> (Vec<Interaction>, Vec<ItemInfo>) {
    let views = vec![
        view("u0", "a", 1),
        view("u0", "b", 2),
        view("u1", "a", 1),
        view("u2", "b", 1),
        view("u3", "c", 1),
    ];
    (
        views,
        vec![title("a", &[]), title("b", &[]), title("c", &[])],
    )
}

#[test]
fn ease_scores_by_hand_and_titles_past_the_cap_fall_back_to_popularity() {
    let (views, items) = ease_fixture();
    let params = |max_dense_items| TrainParams {
        ease_lambda: 1.0,
        max_dense_items,
        ..TrainParams::default()
    };
    let model = Model::train(ModelKind::Ease, &views, &items, &params(10), 10);
    assert_eq!(model.dense_items(), 3);
    let list = model.recommend(&history(&[("a", 1)]), 10, &nothing());
    assert_scores(&list, &[("b", 1.0 / 3.0), ("c", 0.0)]);

    // Capped to the most popular title (a and b tie at 2 viewers: a by name), B is 1×1 with a zero
    // diagonal: no EASE score for anyone, so popularity orders the list.
    let model = Model::train(ModelKind::Ease, &views, &items, &params(1), 10);
    assert_eq!(model.dense_items(), 1);
    let list = model.recommend(&history(&[("a", 1)]), 10, &nothing());
    assert_scores(&list, &[("b", 0.0), ("c", 0.0)]);
    assert_eq!(
        names(&model.recommend(&history(&[("b", 1)]), 10, &nothing())),
        ["a", "c"]
    );
}

/// The sequences of `neighbours.rs`: u0 = t0 t1 t2, u1 = t0 t2, u2 = t1 t2 t0 (distinct times). With window 2:
/// t0 → t2 0.6, t1 0.4; t1 → t2 0.8, t0 0.2; t2 → t0 1.
fn three_sequences() -> Vec<Interaction> {
    vec![
        view("u0", "t0", 1),
        view("u0", "t1", 2),
        view("u0", "t2", 3),
        view("u1", "t0", 1),
        view("u1", "t2", 2),
        view("u2", "t1", 1),
        view("u2", "t2", 2),
        view("u2", "t0", 3),
    ]
}

#[test]
fn sequential_rules_weigh_the_latest_titles_most() {
    let params = TrainParams {
        sequence_window: 2,
        sequence_recent: 2,
        ..TrainParams::default()
    };
    let model = train(ModelKind::Sequential, &three_sequences(), &params);
    // History t1 then t0: t0 (the latest) weighs 1, t1 ½. t2 = 1 × 0.6 + ½ × 0.8 = 1.0; t3 and t4 follow
    // nothing and come by popularity (both 0: by name).
    let expected = [("t2", 1.0), ("t3", 0.0), ("t4", 0.0)];
    let list = model.recommend(&history(&[("t1", 10), ("t0", 20)]), 10, &nothing());
    assert_scores(&list, &expected);
    // The history is re-sorted by time.
    let list = model.recommend(&history(&[("t0", 20), ("t1", 10)]), 10, &nothing());
    assert_scores(&list, &expected);
    // Only the latest title read: t2 = 0.6.
    let latest_only = TrainParams {
        sequence_recent: 1,
        ..params.clone()
    };
    let model = train(ModelKind::Sequential, &three_sequences(), &latest_only);
    let list = model.recommend(&history(&[("t1", 10), ("t0", 20)]), 1, &nothing());
    assert_scores(&list, &[("t2", 0.6)]);
    // Titles of the same second weigh the same: t1 and t0 both 1 → t2 = 0.6 + 0.8.
    let model = train(ModelKind::Sequential, &three_sequences(), &params);
    let list = model.recommend(&history(&[("t1", 10), ("t0", 10)]), 1, &nothing());
    assert_scores(&list, &[("t2", 1.4)]);
}

#[test]
fn linear_transitions_by_hand() {
    // One sequence t0 t1 t2, 2 steps, decay ½, λ = 1: B's rows are t0 = (0, 2, 1.5) / 4.25 and
    // t1 = (0, −0.5, 1.75) / 4.25 (see `linear.rs`). History t0 then t1: t1 weighs 1, t0 ½:
    // t2 = 1.75 / 4.25 + ½ × 1.5 / 4.25 = 2.5 / 4.25.
    let views = vec![
        view("u0", "t0", 1),
        view("u0", "t1", 2),
        view("u0", "t2", 3),
    ];
    let items = vec![title("t0", &[]), title("t1", &[]), title("t2", &[])];
    let params = TrainParams {
        linear_lambda: 1.0,
        linear_steps: 2,
        linear_decay: 0.5,
        ..TrainParams::default()
    };
    let model = Model::train(ModelKind::SequentialLinear, &views, &items, &params, 10);
    let list = model.recommend(&history(&[("t0", 1), ("t1", 2)]), 10, &nothing());
    assert_scores(&list, &[("t2", 2.5 / 4.25)]);
}

#[test]
fn blend_is_the_weighted_sum_of_each_models_scores_over_its_best_candidate() {
    let views = four_users();
    let params = TrainParams {
        ease_lambda: 1.0,
        sequence_window: 3,
        blend: BlendWeights {
            ease: 1.0,
            knn: 0.0,
            sequential: 0.5,
            sequential_linear: 0.0,
            popularity: 0.25,
        },
        ..TrainParams::default()
    };
    let blend = train(ModelKind::Blend, &views, &params);
    let ease = train(ModelKind::Ease, &views, &params);
    let sequential = train(ModelKind::Sequential, &views, &params);
    let viewer = history(&[("t3", 1), ("t0", 2)]);
    let all = |model: &Model| -> HashMap<String, f32> {
        model
            .recommend(&viewer, 10, &nothing())
            .into_iter()
            .collect()
    };
    let (ease_scores, sequential_scores) = (all(&ease), all(&sequential));
    let popularity: HashMap<&str, f32> = [("t1", 3.0), ("t2", 2.0), ("t4", 0.0)].into();
    let largest = |scores: &HashMap<String, f32>| scores.values().copied().fold(0.0f32, f32::max);
    let (ease_top, sequential_top) = (largest(&ease_scores), largest(&sequential_scores));
    assert!(ease_top > 0.0 && sequential_top > 0.0);
    let list = blend.recommend(&viewer, 10, &nothing());
    assert_eq!(list.len(), 3);
    for (item, score) in &list {
        let expected = ease_scores[item] / ease_top
            + 0.5 * sequential_scores[item] / sequential_top
            + 0.25 * popularity[item.as_str()] / 3.0;
        assert!(
            (score - expected).abs() < 1e-5,
            "{item}: {score} ≠ {expected}"
        );
    }
    assert!(list.windows(2).all(|pair| pair[0].1 >= pair[1].1));

    // Reweighted to popularity alone, it is the popularity list.
    let popular_only = blend.with_blend_weights(BlendWeights {
        ease: 0.0,
        knn: 0.0,
        sequential: 0.0,
        sequential_linear: 0.0,
        popularity: 1.0,
    });
    assert_eq!(
        names(&popular_only.recommend(&viewer, 10, &nothing())),
        ["t1", "t2", "t4"]
    );
}

#[test]
fn a_blend_trains_only_the_models_it_weighs() {
    let params = TrainParams {
        blend: BlendWeights {
            ease: 0.0,
            knn: 1.0,
            sequential: 0.0,
            sequential_linear: 0.0,
            popularity: 0.0,
        },
        ..TrainParams::default()
    };
    let blend = train(ModelKind::Blend, &four_users(), &params);
    assert_eq!(blend.dense_items(), 0);
    assert!(blend.sparse_entries() > 0);
    // Weighing a model it was trained without adds nothing: kNN's scores alone (divided by their best).
    let blend = blend.with_blend_weights(BlendWeights {
        ease: 5.0,
        ..params.blend
    });
    let knn = train(ModelKind::ItemKnn, &four_users(), &params);
    let viewer = history(&[("t0", 1), ("t3", 2)]);
    assert_eq!(
        names(&blend.recommend(&viewer, 10, &nothing())),
        names(&knn.recommend(&viewer, 10, &nothing()))
    );
}

#[test]
fn a_viewer_with_no_known_history_gets_trending_titles_then_popular_ones() {
    const DAY: i64 = 24 * 3600;
    let now = 100 * DAY;
    // a: one viewer now (1); b: two viewers ten days ago (2 × 2^-10); c: nobody.
    let views = vec![
        view("u0", "a", now),
        view("u1", "b", now - 10 * DAY),
        view("u2", "b", now - 10 * DAY),
    ];
    let items = vec![title("a", &[]), title("b", &[]), title("c", &[])];
    let params = TrainParams {
        trending_half_life_secs: DAY,
        ..TrainParams::default()
    };
    for kind in ModelKind::ALL {
        let model = Model::train(kind, &views, &items, &params, now);
        let trending = model.trending(10);
        assert_scores(&trending, &[("a", 1.0), ("b", 2.0 * 0.5f32.powi(10))]);
        assert_eq!(
            names(&model.recommend(&[], 10, &nothing())),
            ["a", "b", "c"],
            "{kind}"
        );
        let unknown = history(&[("not-a-title", 5)]);
        assert_eq!(
            names(&model.recommend(&unknown, 2, &nothing())),
            ["a", "b"],
            "{kind}"
        );
        let exclude: HashSet<String> = ["a".to_string()].into();
        assert_eq!(
            names(&model.recommend(&[], 10, &exclude)),
            ["b", "c"],
            "{kind}"
        );
    }
}

#[test]
fn similar_titles_come_from_the_model_then_from_shared_genres() {
    let model = train(ModelKind::ItemKnn, &four_users(), &TrainParams::default());
    let r6 = 1.0 / 6f32.sqrt();
    // t0's neighbours: t1 2/3, then t2 and t3 at 1/√6 (t2 first by name at equal popularity).
    assert_scores(&model.similar("t0", 2), &[("t1", 2.0 / 3.0), ("t2", r6)]);
    // Asked for more than it has, the list goes on with genres: t4 shares Drama and Crime with t0 (2/3).
    assert_scores(
        &model.similar("t0", 10),
        &[("t1", 2.0 / 3.0), ("t2", r6), ("t3", r6), ("t4", 2.0 / 3.0)],
    );
    // t4 has no viewers: titles sharing its genres {Drama, Crime, Thriller}: t0 {Drama, Crime} 2/3,
    // t2 {Comedy, Drama} 1/4; t1 and t3 share none.
    assert_scores(&model.similar("t4", 10), &[("t0", 2.0 / 3.0), ("t2", 0.25)]);
    assert!(model.similar("not-a-title", 10).is_empty());
    assert!(model.similar("t0", 0).is_empty());

    // The popularity model ties titles by genre alone: t0 {Drama, Crime} ~ t4 2/3, ~ t2 {Comedy, Drama} 1/3.
    let popularity = train(
        ModelKind::Popularity,
        &four_users(),
        &TrainParams::default(),
    );
    assert_scores(
        &popularity.similar("t0", 10),
        &[("t4", 2.0 / 3.0), ("t2", 1.0 / 3.0)],
    );

    // The sequential model: what follows t1 (window 2: t2 0.8, t0 0.2).
    let params = TrainParams {
        sequence_window: 2,
        ..TrainParams::default()
    };
    let sequential = train(ModelKind::Sequential, &three_sequences(), &params);
    assert_scores(&sequential.similar("t1", 2), &[("t2", 0.8), ("t0", 0.2)]);
}

#[test]
fn no_list_ever_holds_a_title_outside_the_catalog() {
    let mut views = four_users();
    for user in ["u0", "u1", "u2", "u3", "u4"] {
        views.push(view(user, "ghost", 200));
    }
    views.push(view("u4", "t4", 100));
    for kind in ModelKind::ALL {
        let model = train(kind, &views, &TrainParams::default());
        let known: HashSet<&str> = ["t0", "t1", "t2", "t3", "t4"].into();
        let mut lists = vec![
            model.recommend(&history(&[("t0", 1), ("ghost", 2)]), 10, &nothing()),
            model.recommend(&[], 10, &nothing()),
            model.trending(10),
        ];
        for item in ["t0", "t1", "t4"] {
            lists.push(model.similar(item, 10));
        }
        for list in &lists {
            assert!(
                list.iter().all(|(item, _)| known.contains(item.as_str())),
                "{kind}: {list:?}"
            );
        }
        assert!(model.similar("ghost", 10).is_empty(), "{kind}");
        // The history's ghost title is ignored: t0 alone, so four candidates.
        assert_eq!(lists[0].len(), 4, "{kind}");
    }
}

#[test]
fn every_list_is_distinct_complete_and_free_of_history_and_exclusions() {
    // A small deterministic log: 30 users, 12 titles, a few views each, some partial.
    let items: Vec<ItemInfo> = (0..12)
        .map(|t| title(&format!("t{t}"), &[["A", "B", "C"][t % 3]]))
        .collect();
    let mut views = Vec::new();
    let mut state = 7u64;
    for user in 0..30 {
        for step in 0..(3 + user % 5) {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let item = (state >> 33) % 12;
            views.push(Interaction {
                user: format!("u{user}"),
                item: format!("t{item}"),
                at: 1000 + step as i64 * 60,
                weight: if step % 3 == 0 { 0.4 } else { 1.0 },
                finished: step % 3 != 0,
            });
        }
    }
    let viewer = history(&[("t1", 10), ("t5", 20), ("t5", 30), ("t9", 40)]);
    let exclude: HashSet<String> = ["t2".to_string(), "t3".to_string()].into();
    for kind in ModelKind::ALL {
        let model = Model::train(kind, &views, &items, &TrainParams::default(), 2000);
        for n in [1, 5, 7, 20] {
            let list = model.recommend(&viewer, n, &exclude);
            let distinct: HashSet<&str> = names(&list).into_iter().collect();
            // 12 titles less 3 in the history less 2 excluded: 7 candidates.
            assert_eq!(list.len(), n.min(7), "{kind} n={n}");
            assert_eq!(distinct.len(), list.len(), "{kind}: {list:?}");
            for item in ["t1", "t5", "t9", "t2", "t3"] {
                assert!(!distinct.contains(item), "{kind}: {item} in {list:?}");
            }
            assert!(
                list.windows(2).all(|pair| pair[0].1 >= pair[1].1),
                "{kind}: {list:?}"
            );
        }
        // The same input, the same list.
        assert_eq!(
            model.recommend(&viewer, 7, &exclude),
            model.recommend(&viewer, 7, &exclude)
        );
    }
}

#[test]
fn views_that_say_nothing_are_ignored_and_partial_views_count_as_viewers() {
    let partial = |user: &str, item: &str, weight: f32| Interaction {
        user: user.into(),
        item: item.into(),
        at: 1,
        weight,
        finished: false,
    };
    let views = vec![
        partial("u0", "t0", 0.3),
        partial("u1", "t0", f32::NAN),
        partial("u2", "t1", 0.0),
        partial("u3", "t1", -2.0),
        partial("u4", "t2", 0.9),
        partial("u5", "t2", 0.1),
    ];
    let model = train(ModelKind::Popularity, &views, &TrainParams::default());
    assert_eq!(model.interactions(), 3);
    assert_eq!(model.users(), 3);
    assert_scores(
        &model.recommend(&history(&[("t4", 1)]), 10, &nothing()),
        &[("t2", 2.0), ("t0", 1.0), ("t1", 0.0), ("t3", 0.0)],
    );
}

#[test]
fn models_tell_what_they_are_and_are_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Model>();
    let model = Arc::new(train(
        ModelKind::Blend,
        &four_users(),
        &TrainParams::default(),
    ));
    assert_eq!(model.kind(), ModelKind::Blend);
    assert_eq!(model.trained_at(), 1_000);
    assert_eq!(
        (model.items(), model.users(), model.interactions()),
        (5, 4, 10)
    );
    assert_eq!(model.blend_weights(), TrainParams::default().blend);
    // The four watched titles are all within the dense cap.
    assert_eq!(model.dense_items(), 4);
    let from_thread = {
        let model = Arc::clone(&model);
        std::thread::spawn(move || model.recommend(&history(&[("t0", 1)]), 3, &HashSet::new()))
            .join()
            .expect("no panic")
    };
    assert_eq!(
        from_thread,
        model.recommend(&history(&[("t0", 1)]), 3, &nothing())
    );
    assert!(format!("{model:?}").contains("Blend"));
    for kind in ModelKind::ALL {
        assert_eq!(ModelKind::from_name(kind.name()), Some(kind));
        assert_eq!(kind.to_string(), kind.name());
    }
    assert_eq!(ModelKind::from_name("nope"), None);
}
