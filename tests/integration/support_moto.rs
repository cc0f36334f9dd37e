//! The real EC2 stand-in (`moto_server`) on a free loopback port, and a
//! fault-injecting HTTP proxy in front of it for the paths moto does not
//! exercise (throttling, a create whose answer is lost), with a rate mode
//! for soaks (a seeded share of all requests throttled, failed or dropped,
//! plus latency).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::support;

/// A `moto_server` process, killed on drop.
pub struct MotoServer {
    child: Child,
    pub endpoint: String,
}

impl MotoServer {
    /// Starts moto on a free 127.0.0.1 port and waits until it answers.
    pub fn start() -> MotoServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new(support::tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let server = MotoServer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {addr} within 60s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does to the next requests.
#[derive(Default)]
pub struct Faults {
    /// Answer this many requests with `RequestLimitExceeded` (HTTP 503)
    /// without forwarding them.
    pub throttle: AtomicU32,
    /// Forward requests of this EC2 action, then drop the connection
    /// instead of answering, this many times.
    pub lose_answer: Mutex<Option<(String, u32)>>,
    /// Hold this many requests for 5 s, then drop them unanswered and
    /// unforwarded (a hung endpoint).
    pub stall: AtomicU32,
    /// Requests answered with throttling.
    pub throttled: AtomicU32,
    /// Requests forwarded to moto, by action.
    pub forwarded: Mutex<Vec<String>>,
    /// Rate mode: a share of every request fails (after the counted
    /// faults above, which keep precedence).
    pub rate: Mutex<Option<Rate>>,
    /// Requests the rate mode failed, by fault (`throttled`,
    /// `internal_error`, `dropped`).
    pub rate_hits: Mutex<BTreeMap<&'static str, u32>>,
}

/// The rate mode of the proxy: each request is, with these probabilities,
/// answered 503 `RequestLimitExceeded`, answered 500 `InternalError`, or
/// dropped (connection closed, never forwarded); every request waits
/// `latency` first.
pub struct Rate {
    pub throttle: f64,
    pub internal_error: f64,
    pub drop: f64,
    pub latency: Duration,
    rng: StdRng,
}

impl Rate {
    /// Draws from a generator seeded with `seed` (printed by the tests so a
    /// failure can be replayed).
    pub fn new(
        throttle: f64,
        internal_error: f64,
        drop: f64,
        latency: Duration,
        seed: u64,
    ) -> Rate {
        Rate {
            throttle,
            internal_error,
            drop,
            latency,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The fault for the next request, if any.
    fn draw(&mut self) -> Option<&'static str> {
        let x: f64 = self.rng.gen();
        if x < self.throttle {
            Some("throttled")
        } else if x < self.throttle + self.internal_error {
            Some("internal_error")
        } else if x < self.throttle + self.internal_error + self.drop {
            Some("dropped")
        } else {
            None
        }
    }
}

impl Faults {
    /// How many requests of `action` reached moto.
    pub fn forwarded(&self, action: &str) -> usize {
        self.forwarded
            .lock()
            .unwrap()
            .iter()
            .filter(|a| *a == action)
            .count()
    }
}

/// A loopback HTTP proxy in front of moto that injects [`Faults`].
pub struct FaultProxy {
    pub endpoint: String,
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const INTERNAL_ERROR: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InternalError</Code><Message>An internal error has occurred.</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>";

const THROTTLED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>";

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`
    /// (`http://127.0.0.1:<port>`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let faults = Arc::new(Faults::default());
        let state = faults.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (state, upstream) = (state.clone(), upstream.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(state.clone(), upstream.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FaultProxy {
            endpoint,
            faults,
            task,
        }
    }
}

fn action_of(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .unwrap_or("")
        .to_string()
}

async fn handle(
    faults: Arc<Faults>,
    upstream: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let action = action_of(&body);
    if faults
        .throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        faults.throttled.fetch_add(1, Ordering::SeqCst);
        return Ok(Response::builder()
            .status(503)
            .header("content-type", "text/xml")
            .body(Full::new(Bytes::from_static(THROTTLED.as_bytes())))
            .unwrap());
    }
    if faults
        .stall
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        tokio::time::sleep(Duration::from_secs(5)).await;
        return Err(std::io::Error::other("fault proxy: stalled"));
    }
    let drawn = {
        let mut rate = faults.rate.lock().unwrap();
        rate.as_mut().map(|r| (r.latency, r.draw()))
    };
    if let Some((latency, fault)) = drawn {
        tokio::time::sleep(latency).await;
        if let Some(fault) = fault {
            *faults.rate_hits.lock().unwrap().entry(fault).or_default() += 1;
            let (status, body) = match fault {
                "throttled" => (503, THROTTLED),
                "internal_error" => (500, INTERNAL_ERROR),
                _ => return Err(std::io::Error::other("fault proxy: connection dropped")),
            };
            return Ok(Response::builder()
                .status(status)
                .header("content-type", "text/xml")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap());
        }
    }
    let stream = tokio::net::TcpStream::connect(&upstream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let forwarded = Request::from_parts(parts, Full::new(body));
    let resp = sender
        .send_request(forwarded)
        .await
        .map_err(std::io::Error::other)?;
    faults.forwarded.lock().unwrap().push(action.clone());
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    {
        let mut lose = faults.lose_answer.lock().unwrap();
        if let Some((a, n)) = lose.as_mut() {
            if *a == action && *n > 0 {
                *n -= 1;
                return Err(std::io::Error::other("fault proxy: answer lost"));
            }
        }
    }
    Ok(Response::from_parts(parts, Full::new(body)))
}
