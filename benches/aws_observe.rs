//! Benchmark: how observe and apply of the AWS provider scale with the
//! number of instances, against a real moto server on loopback.
//!
//! Run: `cargo bench --bench aws_observe -- [--split] [N ...]` (needs
//! `.ci/.venv/bin/moto_server`, installed by `.ci/setup-tools`). Prints, per
//! instance count, the API calls and wall time of one observe (median of 5)
//! and the mean time and calls of creating one instance.
//!
//! `--split` puts a recording proxy in the bench process between the
//! provider and moto, and says how much of an observe is moto's and how
//! much tidegate's: the CPU time of moto and of the bench process (the
//! provider: the SDK's signing and XML parsing, tidegate's mapping) during
//! each observe, the sum of moto's round trips, and the wall time of the
//! same observe answered by the proxy from the recorded answers (moto
//! left out: tidegate's side alone, plus the replay's lookups).
//!
//! `--bulk` creates every instance but the first with one RunInstances
//! each, tagged like the first (which the provider creates), instead of
//! through the provider: its search and read-back make moto filter every
//! instance per create, so 2,000 creates would take hours.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_ec2::config::{Credentials, Region};
use tidegate::provider::aws::{AwsProvider, Options};
use tidegate::provider::{Desired, Provider, ResourceId};
use tidegate::value::Value;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A recorded answer: status, content type, body.
type Answer = (u16, Option<hyper::header::HeaderValue>, Bytes);

/// A proxy in front of moto that remembers every answer by its request
/// body (an EC2 Query request is all in its body: action, filters,
/// NextToken) and, in replay mode, answers from memory without asking moto.
#[derive(Default)]
struct Replay {
    upstream: String,
    replay: AtomicBool,
    answers: Mutex<HashMap<Bytes, Answer>>,
    /// Nanoseconds spent waiting for moto, and its answers, since reset.
    upstream_nanos: AtomicU64,
    upstream_calls: AtomicU64,
    /// Replay-mode requests that had no recorded answer (sent to moto).
    misses: AtomicU64,
}

impl Replay {
    async fn answer(
        &self,
        client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> Answer {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.expect("a request body").to_bytes();
        if self.replay.load(Ordering::Relaxed) {
            if let Some(a) = self.answers.lock().unwrap().get(&body) {
                return a.clone();
            }
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        let uri = format!(
            "{}{}",
            self.upstream,
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut fwd = hyper::Request::builder().method(parts.method).uri(uri);
        for (k, v) in &parts.headers {
            if k != hyper::header::HOST {
                fwd = fwd.header(k, v);
            }
        }
        let t = Instant::now();
        let resp = client
            .request(fwd.body(Full::new(body.clone())).unwrap())
            .await
            .expect("moto answers");
        let status = resp.status().as_u16();
        let ctype = resp.headers().get(hyper::header::CONTENT_TYPE).cloned();
        let got = resp
            .into_body()
            .collect()
            .await
            .expect("moto's body")
            .to_bytes();
        self.upstream_nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.upstream_calls.fetch_add(1, Ordering::Relaxed);
        let a = (status, ctype, got);
        self.answers.lock().unwrap().insert(body, a.clone());
        a
    }

    /// Serves on a free loopback port; its endpoint.
    async fn serve(self: Arc<Self>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (me, client) = (self.clone(), client.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (me, client) = (me.clone(), client.clone());
                        async move {
                            let (status, ctype, body) = me.answer(&client, req).await;
                            let mut resp = hyper::Response::builder().status(status);
                            if let Some(c) = ctype {
                                resp = resp.header(hyper::header::CONTENT_TYPE, c);
                            }
                            Ok::<_, std::convert::Infallible>(resp.body(Full::new(body)).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        endpoint
    }
}

/// The bench process's CPU seconds so far (every thread).
fn own_cpu() -> f64 {
    common::cpu_secs(std::process::id()).unwrap_or(f64::NAN)
}

fn desired(kind: &str, name: &str, body: serde_json::Value) -> Desired {
    Desired {
        id: ResourceId {
            module: "bench".into(),
            name: name.into(),
        },
        kind: kind.into(),
        body: Value::from_json(body),
        origin: Default::default(),
    }
}

fn id(live: &tidegate::provider::Live) -> String {
    live.attributes["id"].as_str().unwrap().to_string()
}

fn total(p: &AwsProvider) -> u64 {
    p.api_calls().values().sum()
}

#[tokio::main]
async fn main() {
    let Some(args) = common::args_or_skip("aws_observe") else {
        return;
    };
    let split = args.iter().any(|a| a == "--split");
    let bulk = args.iter().any(|a| a == "--bulk");
    // `--repeat=N`: observes per figure in --split (default 5).
    let repeat: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("--repeat=")?.parse().ok())
        .unwrap_or(5);
    let counts: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() {
        vec![1, 20, 100]
    } else {
        counts
    };
    let (moto, moto_endpoint) = common::start_moto();
    let moto_pid = moto.0.id();
    let replay = Arc::new(Replay {
        upstream: moto_endpoint.clone(),
        ..Replay::default()
    });
    let endpoint = if split {
        replay.clone().serve().await
    } else {
        moto_endpoint
    };
    let conf = aws_sdk_ec2::config::Builder::new()
        .region(Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"));
    let client = aws_sdk_ec2::Client::from_conf(
        conf.clone()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .build(),
    );
    let p = AwsProvider::with_config(
        tidegate::provider::Owner {
            project: "bench".into(),
            environment: "bench".into(),
        },
        conf,
        Options {
            // At 2,000 instances one DescribeInstances page takes moto
            // longer than the default 30 s attempt timeout.
            retry: tidegate::provider::aws::RetryPolicy {
                attempt_timeout: std::time::Duration::from_secs(if split { 600 } else { 30 }),
                ..Default::default()
            },
            ..Options::default()
        },
    );

    let vpc = p
        .apply(
            &desired(
                "vpc",
                "vpc",
                serde_json::json!({"cidrBlock": "10.0.0.0/16"}),
            ),
            None,
        )
        .await
        .unwrap();
    let subnet = p
        .apply(
            &desired(
                "subnet",
                "subnet",
                serde_json::json!({"vpcId": id(&vpc), "cidrBlock": "10.0.0.0/20"}),
            ),
            None,
        )
        .await
        .unwrap();

    if split {
        println!("instances  calls  observe_ms  moto_cpu_ms  moto_round_trips_ms  tidegate_cpu_ms  replayed_observe_ms  replayed_tidegate_cpu_ms  (medians of {repeat}; create_ms/instance)");
    } else {
        println!("instances  observe_calls  observe_ms(median of 5)  create_ms/instance  create_calls/instance");
    }
    let mut made = 0;
    for n in counts {
        let (calls_before, started) = (total(&p), Instant::now());
        let new = n.saturating_sub(made);
        for i in made..n {
            if bulk && i > 0 {
                let first = p.observe(&[]).await.unwrap();
                let first = first
                    .iter()
                    .find(|l| l.kind == "instance")
                    .expect("the first instance");
                bulk_create(&client, &id(first), &id(&subnet), i, n).await;
                break;
            }
            let d = desired(
                "instance",
                &format!("server{i}"),
                serde_json::json!({"ami": "ami-1e749f67", "instanceType": "t3.micro", "subnetId": id(&subnet),
                    "metadata": {"httpTokens": "required"}, "tags": {"owner": "bench"}}),
            );
            p.apply(&d, None).await.unwrap();
        }
        made = made.max(n);
        let per = |x: f64| if new == 0 { 0.0 } else { x / new as f64 };
        let create_ms = per(started.elapsed().as_secs_f64() * 1000.0);
        let create_calls = per((total(&p) - calls_before) as f64);
        if split {
            let m = split_observe(&p, &replay, moto_pid, n, repeat).await;
            println!(
                "{n:>9}  {:>5}  {:>10.1}  {:>11.1}  {:>19.1}  {:>15.1}  {:>19.1}  {:>24.1}  ({create_ms:.1})",
                m[0], m[1], m[2], m[3], m[4], m[5], m[6]
            );
            continue;
        }
        let mut times = Vec::new();
        let mut calls = 0;
        for _ in 0..5 {
            let (before, t) = (total(&p), Instant::now());
            let lives = p.observe(&[]).await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            calls = total(&p) - before;
            assert_eq!(lives.iter().filter(|l| l.kind == "instance").count(), n);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{n:>9}  {calls:>13}  {:>23.1}  {create_ms:>18.1}  {create_calls:>21.1}",
            times[2]
        );
    }
}

/// `repeat` observes through the recording proxy, then as many answered
/// from the recording: medians of calls, wall ms, moto CPU ms, moto round trips ms,
/// bench-process CPU ms; replayed wall ms and bench-process CPU ms.
async fn split_observe(
    p: &AwsProvider,
    replay: &Replay,
    moto_pid: u32,
    n: usize,
    repeat: usize,
) -> [f64; 7] {
    let med = |v: &mut Vec<f64>| common::median(v);
    let (mut calls, mut wall, mut moto, mut trips, mut own) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    replay.replay.store(false, Ordering::Relaxed);
    for _ in 0..repeat {
        replay.answers.lock().unwrap().clear();
        replay.upstream_nanos.store(0, Ordering::Relaxed);
        let (c0, m0, o0, t) = (
            total(p),
            common::cpu_secs(moto_pid).unwrap_or(f64::NAN),
            own_cpu(),
            Instant::now(),
        );
        let lives = p.observe(&[]).await.unwrap();
        wall.push(t.elapsed().as_secs_f64() * 1000.0);
        own.push((own_cpu() - o0) * 1000.0);
        moto.push((common::cpu_secs(moto_pid).unwrap_or(f64::NAN) - m0) * 1000.0);
        trips.push(replay.upstream_nanos.load(Ordering::Relaxed) as f64 / 1e6);
        calls.push((total(p) - c0) as f64);
        assert_eq!(lives.iter().filter(|l| l.kind == "instance").count(), n);
    }
    // The last observe's answers stay recorded; replay them.
    replay.replay.store(true, Ordering::Relaxed);
    replay.misses.store(0, Ordering::Relaxed);
    let (mut rwall, mut rown) = (Vec::new(), Vec::new());
    for _ in 0..repeat {
        let (o0, t) = (own_cpu(), Instant::now());
        let lives = p.observe(&[]).await.unwrap();
        rwall.push(t.elapsed().as_secs_f64() * 1000.0);
        rown.push((own_cpu() - o0) * 1000.0);
        assert_eq!(lives.iter().filter(|l| l.kind == "instance").count(), n);
    }
    replay.replay.store(false, Ordering::Relaxed);
    let misses = replay.misses.load(Ordering::Relaxed);
    assert_eq!(misses, 0, "every replayed request was recorded");
    [
        med(&mut calls),
        med(&mut wall),
        med(&mut moto),
        med(&mut trips),
        med(&mut own),
        med(&mut rwall),
        med(&mut rown),
    ]
}

/// Instances `from..to` (`server<i>`), one RunInstances each, with the
/// tags of instance `template` but their own resource name.
async fn bulk_create(
    client: &aws_sdk_ec2::Client,
    template: &str,
    subnet: &str,
    from: usize,
    to: usize,
) {
    use aws_sdk_ec2::types::{
        HttpTokensState, InstanceMetadataOptionsRequest, ResourceType, Tag, TagSpecification,
    };
    let described = client
        .describe_instances()
        .instance_ids(template)
        .send()
        .await
        .unwrap();
    let tags: Vec<Tag> = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .flat_map(|i| i.tags())
        .cloned()
        .collect();
    let name = tags
        .iter()
        .find(|t| t.key() == Some("tidegate:resource"))
        .and_then(|t| t.value())
        .expect("the first instance names its resource")
        .to_string();
    for i in from..to {
        let mine = tags.iter().map(|t| {
            if t.key() == Some("tidegate:resource") {
                Tag::builder()
                    .key("tidegate:resource")
                    .value(name.replace("server0", &format!("server{i}")))
                    .build()
            } else {
                t.clone()
            }
        });
        client
            .run_instances()
            .image_id("ami-1e749f67")
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .subnet_id(subnet)
            .min_count(1)
            .max_count(1)
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(mine.collect()))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
}
