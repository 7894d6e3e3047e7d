//! In-test providers: an HTTP listener (axum on port 0) and a tiny SMTP
//! server, each recording what it received and able to fail the next N
//! requests, answer slowly, or hang.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Behaviour switches and records shared by both listeners.
#[derive(Default)]
pub(crate) struct Control {
    /// Requests still to fail (HTTP 503 / SMTP 451).
    pub(crate) fail_next: AtomicU32,
    /// Never answer.
    pub(crate) hang: AtomicBool,
    /// Pause before answering, in ms.
    pub(crate) delay_ms: AtomicU64,
    /// Requests seen, failed or not.
    pub(crate) requests: AtomicUsize,
    in_flight: AtomicUsize,
    /// Most requests ever in flight at once.
    pub(crate) max_in_flight: AtomicUsize,
    /// Accepted payloads (HTTP JSON bodies; SMTP: recipients and data).
    pub(crate) accepted: Mutex<Vec<Value>>,
}

impl Control {
    pub(crate) fn accepted(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().clone()
    }

    /// Counts one request in flight until the guard drops.
    fn enter(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Whether this request should fail (consuming one failure).
    fn should_fail(&self) -> bool {
        self.fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    async fn behave(&self) {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
}

struct InFlight(Arc<Control>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An HTTP provider: `POST /` with a JSON body.
pub(crate) struct HttpListener {
    pub(crate) url: String,
    pub(crate) control: Arc<Control>,
}

async fn receive(State(control): State<Arc<Control>>, Json(body): Json<Value>) -> StatusCode {
    let _guard = control.enter();
    control.behave().await;
    if control.should_fail() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    control.accepted.lock().unwrap().push(body);
    StatusCode::OK
}

impl HttpListener {
    pub(crate) async fn start() -> Self {
        let control = Arc::new(Control::default());
        let router = Router::new()
            .route("/", post(receive))
            .with_state(control.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url: format!("http://{addr}/"),
            control,
        }
    }
}

/// A minimal SMTP server: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
pub(crate) struct SmtpListener {
    pub(crate) port: u16,
    pub(crate) control: Arc<Control>,
}

impl SmtpListener {
    pub(crate) async fn start() -> Self {
        let control = Arc::new(Control::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = control.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(session(socket, shared.clone()));
            }
        });
        Self { port, control }
    }
}

async fn session(socket: tokio::net::TcpStream, control: Arc<Control>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    if write.write_all(b"220 test ESMTP ready\r\n").await.is_err() {
        return;
    }
    let mut recipients: Vec<String> = Vec::new();
    let mut from = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-test greets you\r\n250 8BITMIME\r\n".into()
        } else if upper.starts_with("HELO") {
            "250 test\r\n".into()
        } else if upper.starts_with("MAIL FROM") {
            let _guard = control.enter();
            control.behave().await;
            if control.should_fail() {
                "451 4.3.0 try again later\r\n".into()
            } else {
                from = command.clone();
                recipients.clear();
                "250 OK\r\n".into()
            }
        } else if upper.starts_with("RCPT TO") {
            recipients.push(command[8..].trim().to_owned());
            "250 OK\r\n".into()
        } else if upper == "DATA" {
            if write.write_all(b"354 end with .\r\n").await.is_err() {
                return;
            }
            let mut data = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(&line);
            }
            control.accepted.lock().unwrap().push(serde_json::json!({
                "from": from,
                "to": recipients,
                "data": data,
            }));
            "250 OK queued\r\n".into()
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
            "250 OK\r\n".into()
        } else {
            "502 not implemented\r\n".into()
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
