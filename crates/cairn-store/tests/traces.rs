//! MLflow 3's traces (info, tags, request metadata), on SQLite and PostgreSQL.

use cairn_core::search::{parse_trace_filter, parse_trace_order_by};
use cairn_core::Error;
use cairn_store::{SpanRecord, Store, TraceRecord, TraceSpans};

#[macro_use]
mod common;
use common::Db;

on_both!(
    a_trace_logged_again_keeps_what_it_had,
    trace_ids_belong_to_their_workspace,
    trace_search_filters_orders_and_pages_as_mlflow,
    spans_create_a_trace_then_complete_it_and_never_cross_experiments,
);

fn trace(id: &str, exp: &str, at: i64) -> TraceRecord {
    TraceRecord {
        id: id.into(),
        experiment_id: exp.into(),
        request_time: at,
        execution_duration: Some(5),
        state: "OK".into(),
        request_preview: Some("{\"x\": 1}".into()),
        tags: [("mlflow.traceName".to_string(), "predict".to_string())].into(),
        metadata: [("mlflow.sourceRun".to_string(), "r1".to_string())].into(),
        ..Default::default()
    }
}

async fn a_trace_logged_again_keeps_what_it_had(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let (exp, _) = store.ensure_experiment(&ws, "e").await.unwrap();
    store.put_trace(&ws, &trace("tr-1", &exp, 10)).await.unwrap();
    store.put_trace(&ws, &trace("tr-2", &exp, 20)).await.unwrap();
    store.set_trace_tag(&ws, "tr-1", "team", "a").await.unwrap();
    let mut again = trace("tr-1", &exp, 10);
    again.state = "ERROR".into();
    again.execution_duration = None;
    again.tags = [("other".to_string(), "b".to_string())].into();
    store.put_trace(&ws, &again).await.unwrap();
    let t = store.trace(&ws, "tr-1").await.unwrap();
    assert_eq!((t.state.as_str(), t.execution_duration), ("ERROR", None));
    assert_eq!(t.tags.keys().collect::<Vec<_>>(), ["mlflow.traceName", "other", "team"]);
    assert_eq!(t.metadata["mlflow.sourceRun"], "r1");
    assert_eq!(t.request_preview.as_deref(), Some("{\"x\": 1}"));
    assert_eq!(t.client_request_id, None);
    let all = store.traces(&ws, None, std::slice::from_ref(&exp)).await.unwrap();
    assert_eq!(all.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["tr-2", "tr-1"]);
    let some = store.traces(&ws, Some(&["tr-1".into(), "tr-9".into()]), &[]).await.unwrap();
    assert_eq!(some.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["tr-1"]);
    // Both were logged in run r1 (their metadata says so).
    let of_run = store.traces_of_run(&ws, "r1", 1).await.unwrap();
    assert_eq!(of_run.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["tr-2"]);
    assert!(store.traces_of_run(&ws, "r2", 10).await.unwrap().is_empty());
    // Linked to r2 (twice: the second is no change), tr-1 is r2's too.
    store.link_traces_to_run(&ws, &["tr-1".into()], "r2").await.unwrap();
    store.link_traces_to_run(&ws, &["tr-1".into()], "r2").await.unwrap();
    let of_r2 = store.traces_of_run(&ws, "r2", 10).await.unwrap();
    assert_eq!(
        of_r2.iter().map(|t| (t.id.as_str(), t.linked_runs.clone())).collect::<Vec<_>>(),
        [("tr-1", vec!["r2".to_string()])]
    );
    assert!(store.delete_trace_tag(&ws, "tr-1", "team").await.unwrap());
    assert!(!store.delete_trace_tag(&ws, "tr-1", "team").await.unwrap());
    assert_eq!(store.delete_traces(&ws, &["tr-1".into(), "tr-9".into()]).await.unwrap(), 1);
    assert!(matches!(store.trace(&ws, "tr-1").await, Err(Error::NotFound { .. })));
    assert_eq!(store.traces(&ws, None, &[]).await.unwrap().len(), 1);
}

async fn trace_ids_belong_to_their_workspace(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let (exp, _) = store.ensure_experiment(&ws, "e").await.unwrap();
    store.put_trace(&ws, &trace("tr-2", &exp, 20)).await.unwrap();
    let other = store.create_workspace("v", "").await.unwrap();
    assert!(store.trace(&other, "tr-2").await.is_err());
    let (exp2, _) = store.ensure_experiment(&other, "e").await.unwrap();
    store.put_trace(&other, &trace("tr-2", &exp2, 1)).await.unwrap();
    assert_eq!(store.trace(&ws, "tr-2").await.unwrap().request_time, 20);
    assert_eq!(store.delete_traces(&other, &["tr-2".into()]).await.unwrap(), 1);
    assert_eq!(store.trace(&ws, "tr-2").await.unwrap().experiment_id, exp);
    // Deleting the workspace takes its traces, tags and metadata with it.
    store.delete_workspace("w").await.unwrap();
    assert!(store.traces(&ws, None, &[]).await.unwrap().is_empty());
    assert_eq!(store.traces(&other, None, &[]).await.unwrap().len(), 0);
}

async fn trace_search_filters_orders_and_pages_as_mlflow(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let (exp, _) = store.ensure_experiment(&ws, "e").await.unwrap();
    let (other, _) = store.ensure_experiment(&ws, "other").await.unwrap();
    let mut a = trace("tr-a", &exp, 10);
    a.tags.insert("team".into(), "x".into());
    let mut b = trace("tr-b", &exp, 20);
    b.execution_duration = Some(50);
    b.tags.insert("mlflow.traceName".into(), "Train".into());
    b.metadata.insert("mlflow.sourceRun".into(), "r2".into());
    let mut c = trace("tr-c", &exp, 30);
    c.execution_duration = None;
    c.state = "ERROR".into();
    c.tags.clear();
    c.metadata.clear();
    for t in [&a, &b, &c, &trace("tr-o", &other, 40)] {
        store.put_trace(&ws, t).await.unwrap();
    }
    store.link_traces_to_run(&ws, &["tr-b".into()], "r1").await.unwrap();
    let exps = [exp.clone()];
    let ids = |ts: Vec<TraceRecord>| ts.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let find = |f: &'static str| {
        let (store, ws, exps) = (store, &ws, &exps);
        async move {
            let (found, _) =
                store.search_traces(ws, exps, &parse_trace_filter(f).unwrap(), &[], 0, 100).await.unwrap();
            ids(found)
        }
    };
    assert_eq!(find("").await, ["tr-c", "tr-b", "tr-a"], "newest first, this experiment only");
    assert_eq!(find("name = 'predict'").await, ["tr-a"]);
    // LIKE minds case on both backends, ILIKE does not.
    assert!(find("trace.name LIKE 'train%'").await.is_empty());
    assert_eq!(find("trace.name ILIKE 'train%'").await, ["tr-b"]);
    assert_eq!(find("execution_time_ms > 10").await, ["tr-b"]);
    assert_eq!(find("end_time_ms <= 15").await, ["tr-a"]);
    assert_eq!(find("timestamp_ms >= 20").await, ["tr-c", "tr-b"]);
    assert_eq!(find("status = 'ERROR'").await, ["tr-c"]);
    assert_eq!(find("tags.team IS NULL").await, ["tr-c", "tr-b"]);
    assert_eq!(find("tags.team = 'x' and status = 'OK'").await, ["tr-a"]);
    assert_eq!(find("request_metadata.`mlflow.sourceRun` = 'r2'").await, ["tr-b"]);
    assert_eq!(find("metadata.mlflow.sourceRun IS NOT NULL").await, ["tr-b", "tr-a"]);
    assert_eq!(find("attributes.request_id IN ('tr-a', 'tr-z')").await, ["tr-a"]);
    // run_id: the run a trace was logged in or one it was linked to; != holds when none is.
    assert_eq!(find("run_id = 'r1'").await, ["tr-b", "tr-a"]);
    assert_eq!(find("run_id = 'r2'").await, ["tr-b"]);
    assert_eq!(find("run_id IN ('r9', 'r2')").await, ["tr-b"]);
    assert_eq!(find("run_id != 'r2'").await, ["tr-a"], "tr-c has no run at all");
    assert_eq!(find("run_id NOT IN ('r1')").await, Vec::<String>::new());
    // The source-run metadata matches linked runs too, as in MLflow.
    assert_eq!(find("request_metadata.`mlflow.sourceRun` = 'r1'").await, ["tr-b", "tr-a"]);
    // Fractions are kept: 5 ms is not below 4.5, 50 is above 49.5.
    assert_eq!(find("execution_time_ms < 5.5").await, ["tr-a"]);
    assert_eq!(find("execution_time_ms < 4.5").await, Vec::<String>::new());
    assert_eq!(find("execution_time_ms > 49.5").await, ["tr-b"]);

    let order = |terms: &'static [&'static str]| {
        let (store, ws, exps) = (store, &ws, &exps);
        async move {
            let terms: Vec<String> = terms.iter().map(|s| s.to_string()).collect();
            let (found, _) = store
                .search_traces(ws, exps, &[], &parse_trace_order_by(&terms).unwrap(), 0, 100)
                .await
                .unwrap();
            ids(found)
        }
    };
    assert_eq!(order(&["timestamp_ms ASC"]).await, ["tr-a", "tr-b", "tr-c"]);
    // Traces without the value come last either way.
    assert_eq!(order(&["execution_time DESC"]).await, ["tr-b", "tr-a", "tr-c"]);
    assert_eq!(order(&["execution_time ASC"]).await, ["tr-a", "tr-b", "tr-c"]);
    assert_eq!(order(&["tags.team"]).await, ["tr-a", "tr-c", "tr-b"]);

    // Pages: two of one, then the last; every page in the same order.
    let (first, more) = store.search_traces(&ws, &exps, &[], &[], 0, 2).await.unwrap();
    assert!(more);
    let (rest, more) = store.search_traces(&ws, &exps, &[], &[], 2, 2).await.unwrap();
    assert!(!more);
    assert_eq!([ids(first), ids(rest)].concat(), ["tr-c", "tr-b", "tr-a"]);
}

fn span(id: &str, parent: Option<&str>, start: i64, end: i64, status: &str) -> SpanRecord {
    SpanRecord {
        span_id: id.into(),
        parent_span_id: parent.map(str::to_string),
        name: format!("span-{id}"),
        span_type: Some("CHAIN".into()),
        status: status.into(),
        start_ns: start,
        end_ns: Some(end),
        // Attributes JSON-encoded, as MLflow's span dicts keep them.
        content: serde_json::json!({"span_id": id, "attributes": {"model": "\"gpt\"", "tokens": "12"}})
            .to_string(),
    }
}

fn spans_of(id: &str, exp: &str, has_root: bool, spans: Vec<SpanRecord>, state: &str) -> TraceSpans {
    let start = spans.iter().map(|s| s.start_ns).min().unwrap() / 1_000_000;
    TraceSpans {
        trace: TraceRecord {
            id: id.into(),
            experiment_id: exp.into(),
            request_time: start,
            execution_duration: has_root.then_some(250),
            state: state.into(),
            request_preview: has_root.then(|| "in".to_string()),
            tags: [("mlflow.traceName".to_string(), format!("{id}-name"))].into(),
            ..Default::default()
        },
        has_root,
        spans,
    }
}

async fn spans_create_a_trace_then_complete_it_and_never_cross_experiments(store: &Store) {
    let ws = store.create_workspace("w", "").await.unwrap();
    let (exp, _) = store.ensure_experiment(&ws, "e").await.unwrap();
    let (other, _) = store.ensure_experiment(&ws, "o").await.unwrap();
    // A child first: the trace is created, in progress, from it.
    let child = span("c1", Some("r0"), 2_000_000_000, 2_100_000_000, "OK");
    store.log_spans(&ws, &[spans_of("tr-1", &exp, false, vec![child.clone()], "IN_PROGRESS")]).await.unwrap();
    let t = store.trace(&ws, "tr-1").await.unwrap();
    assert_eq!((t.state.as_str(), t.request_time, t.execution_duration), ("IN_PROGRESS", 2000, None));
    assert_eq!(t.tags["mlflow.trace.spansLocation"], "TRACKING_STORE");
    // Then its root, which started earlier: the root's times and state are the trace's.
    let root = span("r0", None, 1_000_000_000, 1_250_000_000, "ERROR");
    store.log_spans(&ws, &[spans_of("tr-1", &exp, true, vec![root], "ERROR")]).await.unwrap();
    let t = store.trace(&ws, "tr-1").await.unwrap();
    assert_eq!((t.state.as_str(), t.request_time, t.execution_duration), ("ERROR", 1000, Some(250)));
    assert_eq!(t.request_preview.as_deref(), Some("in"));
    // The first name stays (a later batch's tags only fill in what is missing).
    assert_eq!(t.tags["mlflow.traceName"], "tr-1-name");
    // A span sent again replaces the old one; spans read back by start.
    let mut again = child.clone();
    again.name = "renamed".into();
    store.log_spans(&ws, &[spans_of("tr-1", &exp, false, vec![again], "IN_PROGRESS")]).await.unwrap();
    let spans = store.trace_spans(&ws, &["tr-1".into(), "tr-9".into()]).await.unwrap();
    assert_eq!(spans.len(), 1);
    let names: Vec<&str> = spans["tr-1"].iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["span-r0", "renamed"]);
    // A trace finished by StartTraceV3 keeps its state: later spans do not reopen it.
    let mut finished = store.trace(&ws, "tr-1").await.unwrap();
    finished.state = "OK".into();
    store.put_trace(&ws, &finished).await.unwrap();
    let root = span("r0", None, 1_000_000_000, 1_900_000_000, "ERROR");
    store.log_spans(&ws, &[spans_of("tr-1", &exp, true, vec![root], "ERROR")]).await.unwrap();
    assert_eq!(store.trace(&ws, "tr-1").await.unwrap().state, "OK");
    // A batch naming tr-1 in another experiment fails whole: tr-2, beside it, is not created.
    let batch = [
        spans_of("tr-2", &other, true, vec![span("x", None, 1, 2, "OK")], "OK"),
        spans_of("tr-1", &other, false, vec![span("y", Some("r0"), 1, 2, "OK")], "IN_PROGRESS"),
    ];
    let err = store.log_spans(&ws, &batch).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(ref m) if m.contains("is in experiment")), "{err}");
    assert!(matches!(store.trace(&ws, "tr-2").await, Err(Error::NotFound { .. })));
    assert_eq!(store.trace_spans(&ws, &["tr-1".into()]).await.unwrap()["tr-1"].len(), 2);
    // Search by any span's name, type or status (LIKE minds case, ILIKE does not).
    let exps = [exp.clone()];
    for (filter, found) in [
        ("span.name = 'renamed'", 1),
        ("span.name LIKE 'span-%'", 1),
        ("span.name LIKE 'SPAN-%'", 0),
        ("span.name ILIKE 'SPAN-R%'", 1),
        ("span.type = 'CHAIN'", 1),
        ("span.status = 'ERROR' AND trace.status = 'OK'", 1),
        ("span.status IN ('UNSET')", 0),
        ("span.name = 'gone'", 0),
        // Attributes compare decoded: a string as itself, a number as its digits.
        ("span.attributes.model = 'gpt'", 1),
        ("span.attributes.model IN ('a', 'gpt')", 1),
        ("span.attributes.model != 'gpt'", 0),
        ("span.attributes.model LIKE 'g%'", 1),
        ("span.attributes.tokens = '12'", 1),
        ("span.attributes.missing = 'x'", 0),
        // MLflow's full-text search over the spans' content (their JSON), and its trace.text.
        ("span.content LIKE '%gpt%'", 1),
        ("span.content LIKE '%GPT%'", 0),
        ("trace.text ILIKE '%GPT%'", 1),
        ("trace.text LIKE '%claude%'", 0),
    ] {
        let clauses = parse_trace_filter(filter).unwrap();
        let (page, _) = store.search_traces(&ws, &exps, &clauses, &[], 0, 10).await.unwrap();
        assert_eq!(page.len(), found, "{filter}");
    }
    // Deleting the trace deletes its spans.
    store.delete_traces(&ws, &["tr-1".into()]).await.unwrap();
    assert!(store.trace_spans(&ws, &["tr-1".into()]).await.unwrap().is_empty());
}
