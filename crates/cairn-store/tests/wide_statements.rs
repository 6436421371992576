//! Statements that bind hundreds of values — IN lists of a page of runs, multi-row inserts of
//! properties, a search that binds in its joins, its filter and its limit — on SQLite and
//! PostgreSQL: every value must reach its own place (on SQLite they are bound positionally,
//! `binds.rs`), and a page of `MAX_PAGE_SIZE` ids must fit in one statement. A page reads each
//! run's params, tags, properties and metrics as one JSON row per run (`search.rs`): every value
//! must come back exactly as the one-run read gives it.

use std::collections::BTreeMap;

use cairn_core::runs::{KeyValue, LogBatch, LogMetric};
use cairn_core::search::{parse_filter, parse_order_by};
use cairn_core::Error;
use cairn_store::{RunModel, Store, MAX_PAGE_SIZE};

#[macro_use]
mod common;
use common::{run, Db};

on_both!(
    a_page_of_runs_loads_whole_and_in_the_order_asked,
    hundreds_of_properties_are_added_at_once_and_never_changed,
    hundreds_of_file_records_are_found_by_path,
    a_search_binds_its_order_keys_filter_and_page_in_place,
    a_page_of_runs_keeps_every_value_exactly,
);

/// `MAX_PAGE_SIZE` runs of one experiment; every 100th has a param, a tag, a metric and a model.
async fn page_of_runs(store: &Store) -> (cairn_core::api::Workspace, Vec<String>) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..MAX_PAGE_SIZE {
        let id = run(store, &ws, "e", &format!("r{i}")).await;
        if i % 100 == 0 {
            let batch = LogBatch {
                params: vec![KeyValue { key: "i".into(), value: i.to_string() }],
                tags: vec![KeyValue { key: "t".into(), value: format!("tag{i}") }],
                metrics: vec![LogMetric {
                    key: "m".into(),
                    value: i as f64,
                    step: Some(0),
                    timestamp: Some(1),
                }],
            };
            store.log_batch(&id, &batch).await.unwrap();
            let model = RunModel { model_id: format!("m-{i}"), output: true, step: 0 };
            store.link_run_models(&id, &[model]).await.unwrap();
        }
        ids.push(id);
    }
    (ws, ids)
}

async fn a_page_of_runs_loads_whole_and_in_the_order_asked(store: &Store) {
    let (ws, mut ids) = page_of_runs(store).await;
    ids.reverse();
    let runs = store.runs_by_ids(&ws, &ids).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ids);
    for (n, r) in runs.iter().enumerate() {
        let i = MAX_PAGE_SIZE as usize - 1 - n;
        assert_eq!(r.display_name, format!("r{i}"));
        if i.is_multiple_of(100) {
            assert_eq!(r.params.get("i"), Some(&i.to_string()), "run r{i}");
            assert_eq!(r.tags.get("t"), Some(&format!("tag{i}")), "run r{i}");
            assert_eq!(r.metrics.get("m").map(|p| p.value), Some(i as f64), "run r{i}");
        } else {
            assert!(r.params.is_empty() && r.metrics.is_empty(), "run r{i}: {r:?}");
        }
        assert!(!r.transitions.is_empty(), "run r{i} has its transitions");
    }

    let statuses = store.run_statuses(&ws, &ids).await.unwrap();
    assert_eq!(statuses.len(), ids.len());
    let meta = store.mlflow_run_meta(&ids).await.unwrap();
    assert_eq!(meta.len(), ids.len());
    assert!(meta.values().all(|m| m.deleted_at.is_none()));
    let io = store.run_inputs_outputs(&ids).await.unwrap();
    assert_eq!(io.len(), 10, "the runs that logged a model");
    for (n, id) in ids.iter().enumerate() {
        let i = MAX_PAGE_SIZE as usize - 1 - n;
        if i.is_multiple_of(100) {
            assert_eq!(io[id].models[0].model_id, format!("m-{i}"));
        }
    }
    // Another workspace's ids are left out.
    let other = store.create_workspace("other", "").await.unwrap();
    assert!(store.run_statuses(&other, &ids).await.unwrap().is_empty());
}

async fn hundreds_of_properties_are_added_at_once_and_never_changed(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let id = run(store, &ws, "e", "r").await;
    let props: BTreeMap<String, String> = (0..1000).map(|i| (format!("p{i:04}"), format!("v{i}"))).collect();
    store.add_run_properties(&id, &props).await.unwrap();
    assert_eq!(store.run(&ws, &id).await.unwrap().properties, props);
    // The same values again are accepted (a retry); one changed value refuses the whole call.
    store.add_run_properties(&id, &props).await.unwrap();
    let mut changed = props.clone();
    changed.insert("p0999".into(), "other".into());
    changed.insert("q".into(), "new".into());
    let err = store.add_run_properties(&id, &changed).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("p0999"), "{err}");
    assert_eq!(store.run(&ws, &id).await.unwrap().properties, props, "nothing written");
}

async fn hundreds_of_file_records_are_found_by_path(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let ds = store.datastore(&ws, "default").await.unwrap();
    for i in 0..1200u64 {
        if i % 3 != 0 {
            store.put_file_record(&ds.id, &format!("f/{i}"), i, &format!("{i:064}")).await.unwrap();
        }
    }
    let paths: Vec<String> = (0..1200).map(|i| format!("f/{i}")).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let found = store.file_records(&ds.id, &paths).await.unwrap();
    assert_eq!(found.len(), 800);
    for i in (0..1200u64).filter(|i| i % 3 != 0) {
        let rec = &found[&format!("f/{i}")];
        assert_eq!((rec.size, rec.sha256.as_str()), (i, format!("{i:064}").as_str()));
    }
}

async fn a_search_binds_its_order_keys_filter_and_page_in_place(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..6i64 {
        let id = run(store, &ws, "e", &format!("r{i}")).await;
        let batch = LogBatch {
            params: vec![KeyValue { key: "depth".into(), value: format!("{}", 9 - i) }],
            tags: vec![KeyValue {
                key: "kind".into(),
                value: if i % 2 == 0 { "tree" } else { "linear" }.into(),
            }],
            metrics: vec![LogMetric {
                key: "rmse".into(),
                value: i as f64,
                step: Some(0),
                timestamp: Some(1),
            }],
        };
        store.log_batch(&id, &batch).await.unwrap();
        ids.push(id);
    }
    // Order keys bind in the joins, before the filter's values; the page binds last.
    let clauses = parse_filter("tags.kind = 'tree' and metrics.rmse >= 1").unwrap();
    let order = parse_order_by(&["params.depth ASC".to_string(), "metrics.rmse DESC".to_string()]).unwrap();
    let (runs, more) = store.search_runs(&ws, Some("e"), &clauses, &order, 0, 1).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [ids[4].as_str()]);
    assert!(more);
    let (runs, more) = store.search_runs(&ws, Some("e"), &clauses, &order, 1, 5).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [ids[2].as_str()]);
    assert!(!more);
}

/// Doubles that a 15-digit or a JSON-number round trip would change, and text that JSON must
/// escape; the page read (one JSON row per run) must give what the one-run read gives, bit for bit.
async fn a_page_of_runs_keeps_every_value_exactly(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let id = run(store, &ws, "e", "r").await;
    let other = run(store, &ws, "e", "nothing logged").await;
    let values = [
        0.1 + 0.2,
        1.0 / 3.0,
        -2.0 / 3.0,
        std::f64::consts::PI,
        1e22,
        123456789012345680.0,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        -1.5e-300,
        0.0,
        7.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    let text = [
        "plain",
        "quote \" and backslash \\ and slash /",
        "tab\tnewline\nnul-free control \u{1}",
        "unicode: café, 漢字, 🍷",
        "[1, 2] {\"json\": \"lookalike\"}",
        "",
    ];
    let batch = LogBatch {
        params: text
            .iter()
            .enumerate()
            .map(|(i, t)| KeyValue { key: format!("p{i}"), value: t.to_string() })
            .collect(),
        tags: text
            .iter()
            .enumerate()
            .map(|(i, t)| KeyValue { key: format!("t {i}/x"), value: t.to_string() })
            .collect(),
        metrics: values
            .iter()
            .enumerate()
            .map(|(i, v)| LogMetric {
                key: format!("m{i}"),
                value: *v,
                step: Some(i as i64 * 1_000_000_007),
                timestamp: Some(i64::MAX - i as i64),
            })
            .collect(),
    };
    store.log_batch(&id, &batch).await.unwrap();
    let props: BTreeMap<String, String> =
        text.iter().enumerate().map(|(i, t)| (format!("k{i}"), t.to_string())).collect();
    store.add_run_properties(&id, &props).await.unwrap();

    let one = store.run(&ws, &id).await.unwrap();
    let page = store.runs_by_ids(&ws, &[other.clone(), id.clone()]).await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].id, other);
    assert!(page[0].params.is_empty() && page[0].tags.is_empty() && page[0].metrics.is_empty());
    let paged = &page[1];
    assert_eq!(paged.params, one.params);
    assert_eq!(paged.tags, one.tags);
    assert_eq!(paged.properties, props);
    assert_eq!(paged.properties, one.properties);
    for (i, t) in text.iter().enumerate() {
        assert_eq!(paged.params[&format!("p{i}")], *t);
    }
    assert_eq!(paged.metrics.len(), values.len());
    for (i, v) in values.iter().enumerate() {
        let key = format!("m{i}");
        let (got, want) = (&paged.metrics[&key], &one.metrics[&key]);
        if v.is_nan() {
            assert!(got.value.is_nan() && want.value.is_nan(), "{key}: {got:?}");
        } else {
            assert_eq!(got.value.to_bits(), v.to_bits(), "{key}: page gave {:e}, logged {v:e}", got.value);
            assert_eq!(want.value.to_bits(), v.to_bits(), "{key}: one-run read gave {:e}", want.value);
        }
        assert_eq!((got.step, got.timestamp), (i as i64 * 1_000_000_007, i64::MAX - i as i64), "{key}");
        assert_eq!((got.step, got.timestamp), (want.step, want.timestamp), "{key}");
    }
}
