//! The client side of HTTP for the CLI: the gateway's address (`--url`), connections to it,
//! requests on a kept-alive connection, and the protocol's error bodies turned into
//! [`CliError`]s.
//!
//! hyper's own HTTP/1.1 client connection is used, the same hyper that serves: a request is
//! sent, its answer read, and the connection reused while it stays open.

use std::time::Duration;

use axum::http::{HeaderValue, Method, Request, Response, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::CliError;

/// How long connecting (TCP, and TLS where there is one) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of an error body is read: the protocol's are a few hundred bytes.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// What every request says it is.
const USER_AGENT: &str = concat!("switchboard-cli/", env!("CARGO_PKG_VERSION"));

/// A byte stream to the gateway: plain TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The gateway's address, as given with `--url`, split once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `https://`: connections are TLS.
    pub secure: bool,
    /// The host to connect to (without the brackets of an IPv6 address).
    pub host: String,
    /// The port to connect to (80 or 443 unless given).
    pub port: u16,
    /// `host[:port]` as given: the `Host` header and the WebSocket URL's authority.
    pub authority: String,
    /// The path prefix every endpoint is under, without a trailing `/` (`""` at the root).
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(text: &str) -> Result<BaseUrl, CliError> {
        let bad = |why: &str| CliError::Usage(format!("--url {text:?}: {why}"));
        let uri: Uri = text.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) | None => return Err(bad("give an http:// or https:// URL")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user names and passwords go in --token, not the URL"));
        }
        if uri.query().is_some() {
            return Err(bad("a base URL has no query"));
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Ok(BaseUrl {
            secure,
            host: host.to_owned(),
            port: authority
                .port_u16()
                .unwrap_or(if secure { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The request target of `path` (`/events`) with `query` (already encoded; may be empty).
    pub fn target(&self, path: &str, query: &str) -> String {
        if query.is_empty() {
            format!("{}{path}", self.prefix)
        } else {
            format!("{}{path}?{query}", self.prefix)
        }
    }

    /// The WebSocket URL of a request target.
    pub fn ws_url(&self, target: &str) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}{target}", self.authority)
    }

    /// The URL as people write it, for messages.
    pub fn shown(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.prefix)
    }
}

/// Opens a byte stream to the gateway: TCP, then TLS for `https://`, within
/// [`CONNECT_TIMEOUT`].
pub async fn connect(base: &BaseUrl) -> Result<Box<dyn Io>, CliError> {
    let cannot = |why: String| CliError::CannotConnect(format!("{}: {why}", base.shown()));
    let opening = async {
        let tcp = TcpStream::connect((base.host.as_str(), base.port))
            .await
            .map_err(|e| cannot(e.to_string()))?;
        // Requests and frames are small and each is awaited: Nagle would only delay them.
        let _ = tcp.set_nodelay(true);
        if base.secure {
            super::tls::wrap(tcp, &base.host).await.map_err(cannot)
        } else {
            Ok(Box::new(tcp) as Box<dyn Io>)
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
        Ok(opened) => opened,
        Err(_) => Err(cannot(format!("no connection within {CONNECT_TIMEOUT:?}"))),
    }
}

/// Requests to one gateway over one kept-alive connection, opened when needed.
#[derive(Debug)]
pub struct HttpClient {
    base: BaseUrl,
    /// The `Authorization` header, when a token (or admin key) is given.
    authorization: Option<HeaderValue>,
    /// The open connection, if any; replaced when the gateway has closed it.
    connection: Option<SendRequest<Full<Bytes>>>,
}

impl HttpClient {
    pub fn new(base: BaseUrl, bearer: Option<&str>) -> Result<HttpClient, CliError> {
        Ok(HttpClient {
            base,
            authorization: authorization(bearer)?,
            connection: None,
        })
    }

    pub fn base(&self) -> &BaseUrl {
        &self.base
    }

    /// The `Authorization` header this client sends, if any.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// Sends `method target` with `body` (and its content type), and returns the response when
    /// its status is a success; otherwise the gateway's error, read from the body.
    pub async fn send(
        &mut self,
        method: Method,
        target: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Response<Incoming>, CliError> {
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .header(header::HOST, &self.base.authority)
            .header(header::USER_AGENT, USER_AGENT);
        if let Some(value) = &self.authorization {
            request = request.header(header::AUTHORIZATION, value.clone());
        }
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header(header::CONTENT_TYPE, content_type);
                Full::new(bytes)
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .map_err(|e| CliError::Usage(format!("cannot make a request for {target}: {e}")))?;
        let sender = self.ready().await?;
        let response = sender.send_request(request).await.map_err(|e| {
            self.connection = None;
            CliError::CannotConnect(format!("{}: {e}", self.base.shown()))
        })?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(refusal(response).await)
        }
    }

    /// The kept-alive connection if it can take a request, or a new one.
    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, CliError> {
        if let Some(sender) = &mut self.connection
            && sender.ready().await.is_err()
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            let io = connect(&self.base).await?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| CliError::CannotConnect(format!("{}: {e}", self.base.shown())))?;
            // The connection's I/O runs beside the requests; it ends when the sender is dropped
            // or the gateway closes it, which the next `ready` notices.
            tokio::spawn(connection);
            self.connection = Some(sender);
        }
        match &mut self.connection {
            Some(sender) => Ok(sender),
            None => unreachable!("a connection was just opened"),
        }
    }
}

/// `Bearer TOKEN` as a header value.
pub fn authorization(bearer: Option<&str>) -> Result<Option<HeaderValue>, CliError> {
    bearer
        .map(|token| {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                CliError::Usage("a token must be printable ASCII, without line breaks".into())
            })?;
            value.set_sensitive(true);
            Ok(value)
        })
        .transpose()
}

/// The body of a response, whole, in at most `limit` bytes.
pub async fn read_body(response: Response<Incoming>, limit: usize) -> Result<Bytes, CliError> {
    let limited = http_body_util::Limited::new(response.into_body(), limit);
    limited
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| CliError::Failed(format!("cannot read the gateway's answer: {e}")))
}

/// `{"error":{"code":…,"message":…}}`, the body of every rejection.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// The error a non-success response stands for.
pub async fn refusal(response: Response<Incoming>) -> CliError {
    let status = response.status().as_u16();
    let body = read_body(response, ERROR_BODY_LIMIT)
        .await
        .unwrap_or_default();
    refusal_of(status, &body)
}

/// The error a status and body stand for: the protocol's error when the body is one, otherwise
/// the status with the start of the body.
pub fn refusal_of(status: u16, body: &[u8]) -> CliError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => CliError::Refused {
            status,
            code: error.code,
            message: error.message,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            let text = text.trim();
            let code = match status {
                401 => "unauthorized",
                403 => "forbidden",
                _ => "http_error",
            };
            CliError::Refused {
                status,
                code: code.into(),
                message: if text.is_empty() {
                    format!("HTTP {status} without an explanation")
                } else {
                    format!("HTTP {status}: {text}")
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let base = BaseUrl::parse("http://127.0.0.1:8080").expect("valid");
        assert_eq!(
            base,
            BaseUrl {
                secure: false,
                host: "127.0.0.1".into(),
                port: 8080,
                authority: "127.0.0.1:8080".into(),
                prefix: String::new(),
            }
        );
        assert_eq!(base.target("/poll", "topic=a"), "/poll?topic=a");
        assert_eq!(base.ws_url("/ws?topic=a"), "ws://127.0.0.1:8080/ws?topic=a");

        let proxied = BaseUrl::parse("https://[::1]/switchboard/").expect("valid");
        assert!(proxied.secure);
        assert_eq!(proxied.host, "::1");
        assert_eq!(proxied.port, 443);
        assert_eq!(proxied.target("/events", ""), "/switchboard/events");
        assert_eq!(
            proxied.ws_url("/switchboard/ws"),
            "wss://[::1]/switchboard/ws"
        );

        for bad in [
            "127.0.0.1:8080",
            "ftp://x",
            "http://u:p@x",
            "http://x/?a=1",
            "",
        ] {
            assert!(
                matches!(BaseUrl::parse(bad), Err(CliError::Usage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_bodies_become_refusals_with_their_code() {
        let refused = refusal_of(
            400,
            br#"{"error":{"code":"bad_topic","message":"topic name is empty"}}"#,
        );
        assert_eq!(
            refused.to_string(),
            "the gateway refused: 400 bad_topic: topic name is empty"
        );
        assert_eq!(refused.exit_code(), super::super::ExitCode::Failed);
        let unauthorized = refusal_of(
            401,
            br#"{"error":{"code":"unauthorized","message":"no token"}}"#,
        );
        assert_eq!(unauthorized.exit_code(), super::super::ExitCode::NotAllowed);
        assert!(unauthorized.to_string().contains("--token"));
        let bare = refusal_of(431, b"");
        assert_eq!(
            bare.to_string(),
            "the gateway refused: 431 http_error: HTTP 431 without an explanation"
        );
        assert!(refusal_of(503, b"busy").is_transient());
        assert!(!refusal_of(400, b"").is_transient());
    }

    #[test]
    fn tokens_are_sent_as_bearer_and_checked() {
        let value = authorization(Some("abc.def"))
            .expect("valid")
            .expect("some");
        assert_eq!(value, "Bearer abc.def");
        assert!(value.is_sensitive());
        assert!(authorization(Some("a\nb")).is_err());
        assert!(authorization(None).expect("fine").is_none());
    }
}
