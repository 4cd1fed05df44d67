//! Distributed tracing end to end: the real binary exports its spans over
//! OTLP/HTTP to a receiver this test runs on loopback, and the spans it
//! receives must make one connected trace per turn. Through `colloquy
//! serve`; and through a `colloquy gateway` and two `colloquy worker`
//! processes on Kafka, where the trace crosses the bus three times and the
//! user id, with `telemetry.user_id_baggage` on, rides along in baggage.
//! Message text never appears in a span.

#[cfg(all(feature = "kafka", feature = "redis", feature = "mysql"))]
mod action_server;
#[cfg(all(feature = "kafka", feature = "redis", feature = "mysql"))]
mod cluster;
mod server;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde_json::{json, Value};
use server::{root, terminate, token, SECRET, UNLIMITED};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One exported span, with the service that sent it.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    attributes: BTreeMap<String, String>,
    /// The attribute values of its events (logs inside the span).
    event_values: Vec<String>,
}

#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Exported>>>,
    undecodable: Arc<Mutex<Vec<String>>>,
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

async fn collect(
    State(received): State<Received>,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1]) {
    let protobuf = [(header::CONTENT_TYPE, "application/x-protobuf")];
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            received.undecodable.lock().unwrap().push(e.to_string());
            return (StatusCode::BAD_REQUEST, protobuf);
        }
    };
    let mut spans = received.spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(Exported {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name.clone(),
                    attributes: attributes(&span.attributes),
                    event_values: span
                        .events
                        .iter()
                        .flat_map(|e| {
                            attributes(&e.attributes)
                                .into_values()
                                .chain([e.name.clone()])
                        })
                        .collect(),
                });
            }
        }
    }
    (StatusCode::OK, protobuf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver on loopback: `POST /v1/traces`, protobuf.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(collect))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (endpoint, received)
}

impl Received {
    fn spans(&self) -> Vec<Exported> {
        let undecodable = self.undecodable.lock().unwrap();
        assert!(
            undecodable.is_empty(),
            "undecodable exports: {undecodable:?}"
        );
        self.spans.lock().unwrap().clone()
    }
}

/// The spans of each trace, by trace id.
fn traces(spans: &[Exported]) -> BTreeMap<String, Vec<Exported>> {
    let mut by_trace: BTreeMap<String, Vec<Exported>> = BTreeMap::new();
    for s in spans {
        by_trace
            .entry(s.trace_id.clone())
            .or_default()
            .push(s.clone());
    }
    by_trace
}

/// Checks that `trace` is one tree under a `gateway.receive` root whose
/// parent is `root_parent` (empty: none), and returns its span names
/// with their parents' names.
fn tree(trace: &[Exported], root_parent: &str) -> BTreeSet<(String, String)> {
    let ids: BTreeMap<&str, &Exported> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let roots: Vec<_> = trace
        .iter()
        .filter(|s| !ids.contains_key(s.parent.as_str()))
        .collect();
    assert_eq!(roots.len(), 1, "one root in {trace:#?}");
    assert_eq!(roots[0].name, "gateway.receive", "{trace:#?}");
    assert_eq!(roots[0].parent, root_parent, "{trace:#?}");
    trace
        .iter()
        .filter(|s| ids.contains_key(s.parent.as_str()))
        .map(|s| (s.name.clone(), ids[s.parent.as_str()].name.clone()))
        .collect()
}

fn assert_has(edges: &BTreeSet<(String, String)>, expected: &[(&str, &str)]) {
    for (child, parent) in expected {
        assert!(
            edges.contains(&(child.to_string(), parent.to_string())),
            "no `{child}` under `{parent}` in {edges:#?}"
        );
    }
}

/// Nothing a user typed is in a span: not in an attribute, not in an
/// event, not in a name.
fn assert_no_text(spans: &[Exported], texts: &[&str]) {
    for s in spans {
        let everything = s
            .attributes
            .values()
            .chain(&s.event_values)
            .chain([&s.name]);
        for value in everything {
            for t in texts {
                assert!(!value.contains(t), "`{t}` in span {s:#?}");
            }
        }
    }
}

/// Waits until the server prints where it listens; keeps draining its
/// stdout after that.
fn listening_address(child: &mut std::process::Child) -> String {
    use std::io::{BufRead, BufReader};
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split(" on http://").nth(1).map(|a| a.trim().to_string()));
    std::thread::spawn(move || for _ in lines {});
    addr.unwrap_or_else(|| panic!("colloquy serve exited: {:?}", child.wait()))
}

async fn post(
    c: &reqwest::Client,
    base: &str,
    user: &str,
    id: &str,
    text: &str,
    traceparent: Option<&str>,
) -> Value {
    let mut request = c
        .post(format!(
            "{base}/v1/conversations/{user}/messages?wait_ms=10000"
        ))
        .bearer_auth(token(user, "chat"))
        .json(&json!({"text": text, "id": id}));
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200, "{text}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_through_serve_is_one_connected_trace_and_logs_carry_its_id() {
    let (endpoint, received) = receiver().await;
    let data = tempfile::tempdir().unwrap();
    let stderr = data.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .current_dir(root())
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data.path().join("data"))
        .env("COLLOQUY_JWT_SECRET", SECRET)
        .env("COLLOQUY_TELEMETRY_ENDPOINT", &endpoint)
        // The stage runner logs each record it handled at debug level,
        // inside the record's span.
        .env("RUST_LOG", "warn,colloquy_bus::runner=debug")
        .envs(UNLIMITED)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("colloquy serve");
    let addr = listening_address(&mut child);
    let base = format!("http://{addr}");
    let c = reqwest::Client::new();

    let asked = "星云跑鞋有39码吗";
    let v = post(&c, &base, "alice", "m1", asked, None).await;
    assert!(v["replies"][0].as_str().unwrap().contains("有货"), "{v}");
    // A client's trace goes on through the turn.
    let (client_trace, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traceparent = format!("00-{client_trace}-{client_span}-01");
    post(&c, &base, "alice", "m2", "要42码的", Some(&traceparent)).await;
    assert_eq!(
        terminate(&mut child, "colloquy serve", Duration::from_secs(20)),
        Some(0)
    );

    let spans = received.spans();
    let traces = traces(&spans);
    assert_eq!(traces.len(), 2, "one trace per turn: {:#?}", traces.keys());
    let (mine, first): (Vec<_>, Vec<_>) =
        traces.into_iter().partition(|(id, _)| id == client_trace);
    let (first_id, first) = first.into_iter().next().unwrap();
    let edges = tree(&first, "");
    let expected = [
        ("publish", "gateway.receive"),
        ("consume", "publish"),
        ("nlu", "consume"),
        ("policy", "consume"),
        ("store.append", "policy"),
        ("gateway.deliver", "consume"),
    ];
    let named = |edges: BTreeSet<(String, String)>| -> BTreeSet<(String, String)> {
        edges
            .into_iter()
            .map(|(c, p)| (c.replace(" chat.in", ""), p.replace(" chat.in", "")))
            .collect()
    };
    assert_has(&named(edges.clone()), &expected);
    assert!(
        edges.contains(&("publish chat.in".into(), "gateway.receive".into())),
        "{edges:#?}"
    );
    let edges = tree(&mine[0].1, client_span);
    assert_has(&named(edges), &expected);
    for s in &spans {
        assert_eq!(s.service, "colloquy-serve");
        assert!(
            !s.attributes.contains_key("user.id"),
            "user id without opting in: {s:#?}"
        );
    }
    assert_no_text(&spans, &[asked, "要42码的", "星云"]);

    // The runner's log lines inside the first turn carry its trace id.
    let logs = std::fs::read_to_string(&stderr).unwrap();
    let handled: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "handled")
        .collect();
    assert!(
        handled.iter().any(|l| l["trace_id"] == first_id.as_str()),
        "no log line of the first turn with its trace id {first_id} in:\n{logs}"
    );
    assert!(
        handled.iter().any(|l| l["trace_id"] == client_trace),
        "{logs}"
    );
    assert!(!logs.contains(asked), "{logs}");
}

#[cfg(all(feature = "kafka", feature = "redis", feature = "mysql"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_across_gateway_and_workers_is_one_trace_carrying_the_user_id() {
    use std::io::Write;

    let (endpoint, received) = receiver().await;
    let (_counted, actions) = action_server::counter().await;
    let cluster = cluster::Cluster::start();
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&cluster.config)
        .unwrap();
    write!(
        config,
        "\n[telemetry]\nendpoint = \"{endpoint}\"\nuser_id_baggage = true\n"
    )
    .unwrap();
    let bot = tempfile::tempdir().unwrap();
    server::write_bot(bot.path(), &action_server::counted_bot(&actions));
    let bot_arg = ["--bot", bot.path().to_str().unwrap()];
    let (mut gateway, addr) = cluster.gateway();
    let mut policy = cluster.worker_with("policy-1", "nlu,policy", &bot_arg);
    let mut action = cluster.worker_with("action-1", "action", &bot_arg);
    let base = format!("http://{addr}");
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // The turn stops for a remote action (two 503s, then an answer) that
    // the action worker makes: gateway → chat.in → policy worker →
    // chat.action → action worker → chat.out → gateway.
    let asked = "try the flaky one";
    let v = post(&c, &base, "bob-7", "m1", asked, None).await;
    assert_eq!(v["replies"], json!(["checked", "7 left"]), "{v}");
    for (p, what) in [
        (&mut action, "action"),
        (&mut policy, "policy"),
        (&mut gateway, "gateway"),
    ] {
        assert_eq!(p.terminate(), Some(0), "{what}");
    }

    let started = Instant::now();
    let spans = loop {
        let spans = received.spans();
        if spans.iter().any(|s| s.name == "gateway.deliver")
            || started.elapsed() > Duration::from_secs(10)
        {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let traces = traces(&spans);
    assert_eq!(traces.len(), 1, "one trace for the turn: {spans:#?}");
    let trace = traces.into_values().next().unwrap();
    let edges = tree(&trace, "");
    assert_has(
        &edges,
        &[
            ("publish chat.in", "gateway.receive"),
            ("consume chat.in", "publish chat.in"),
            ("nlu", "consume chat.in"),
            ("policy", "consume chat.in"),
            ("store.append", "policy"),
            ("publish chat.action", "consume chat.in"),
            ("consume chat.action", "publish chat.action"),
            ("action.call", "consume chat.action"),
            ("store.append", "consume chat.action"),
            ("publish chat.out", "consume chat.action"),
            ("consume chat.out", "publish chat.out"),
            ("gateway.deliver", "consume chat.out"),
        ],
    );
    let service_of = |name: &str| -> BTreeSet<&str> {
        trace
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.service.as_str())
            .collect()
    };
    assert_eq!(
        service_of("gateway.receive"),
        BTreeSet::from(["colloquy-gateway"])
    );
    assert_eq!(
        service_of("gateway.deliver"),
        BTreeSet::from(["colloquy-gateway"])
    );
    assert_eq!(service_of("nlu"), BTreeSet::from(["colloquy-worker"]));
    assert_eq!(
        service_of("action.call"),
        BTreeSet::from(["colloquy-worker"])
    );
    let call = trace.iter().find(|s| s.name == "action.call").unwrap();
    assert_eq!(call.attributes["action"], "flaky");
    assert_eq!(call.attributes["outcome"], "completed");

    // The gateway names the user; the workers learn it from the baggage.
    for name in [
        "gateway.receive",
        "consume chat.in",
        "consume chat.action",
        "consume chat.out",
    ] {
        let span = trace.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            span.attributes.get("user.id").map(String::as_str),
            Some("bob-7"),
            "{span:#?}"
        );
    }
    assert_no_text(&trace, &[asked, "flaky one"]);
}
