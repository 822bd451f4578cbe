//! `switchboard sub TOPIC…`: prints every message of the topics, one envelope per line, and
//! follows them for as long as it runs: it reconnects by itself with its cursor, over the
//! transport chosen, and with `--cursor-file` carries its place from one run to the next.
//!
//! Output and cursor go together: a message is written and flushed to stdout first, and only
//! then does the cursor file move past it. A run killed at any moment therefore leaves a cursor
//! that is never ahead of what was printed; at most the one message whose line was flushed just
//! before the kill, and not yet recorded, is printed again by the next run.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::{HeaderValue, Method, header};
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use switchboard_hub::{Cursor, Position, TopicName};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::cursor_file::CursorFile;
use super::frames::{EnvelopeHead, PollReply, Positions, Reset, SseItem, SseReader, WsFrame};
use super::http::{BaseUrl, HttpClient, connect, read_body, refusal_of};
use super::{CliError, ClientArgs};

/// The first wait before reconnecting; it doubles on every failed attempt.
const FIRST_DELAY: Duration = Duration::from_millis(100);

/// The longest wait between attempts.
const LONGEST_DELAY: Duration = Duration::from_secs(5);

/// The most a poll reply may be: the gateway's largest batch and then some.
const POLL_REPLY_LIMIT: usize = (1 << 30) + (32 << 20);

/// Follow topics and print their messages, one JSON envelope per line.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// The topics to follow.
    #[arg(required = true, value_name = "TOPIC")]
    pub topics: Vec<String>,

    /// Start after this cursor (a message id, or a cursor from an earlier run); without it,
    /// from now. A cursor file that holds a cursor wins over it.
    #[arg(long, value_name = "CURSOR")]
    pub since: Option<String>,

    /// How to follow: WebSocket, Server-Sent Events or long-poll.
    #[arg(long, value_enum, default_value_t = TransportKind::Ws)]
    pub transport: TransportKind,

    /// Keep the cursor in this file: a run starts where the last one stopped.
    #[arg(long, value_name = "FILE")]
    pub cursor_file: Option<PathBuf>,

    /// Reconnect when the gateway has sent nothing at all (not even a heartbeat) for this
    /// long; keep it above the gateway's heartbeat interval and longest poll.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
}

/// The transport `sub` follows with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    Ws,
    Sse,
    Poll,
}

impl TransportKind {
    fn name(self) -> &'static str {
        match self {
            TransportKind::Ws => "WebSocket",
            TransportKind::Sse => "SSE",
            TransportKind::Poll => "long-poll",
        }
    }
}

pub async fn run(args: SubscribeArgs) -> Result<(), CliError> {
    let topics = args
        .topics
        .iter()
        .map(|name| {
            TopicName::new(name).map_err(|e| CliError::Usage(format!("topic {name:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let base = BaseUrl::parse(&args.client.url)?;
    let client = HttpClient::new(base, args.client.token.as_deref())?;
    let mut cursor_file = args.cursor_file.clone().map(CursorFile::new);
    let stored = match &mut cursor_file {
        Some(file) => file.read()?,
        None => None,
    };
    let since = match (&stored, &args.since) {
        (Some(stored), _) => {
            let path = args.cursor_file.clone().unwrap_or_default();
            let path = path.display();
            Some(parse_cursor(stored, &format!("the cursor file {path}"))?)
        }
        (None, Some(since)) if !since.is_empty() => Some(parse_cursor(since, "--since")?),
        (None, _) => None,
    };
    let place = Place::new(topics, since.as_ref());
    let mut follow = Follow {
        client,
        output: Output {
            place,
            pending: Vec::new(),
            cursor_file,
        },
        transport: args.transport,
        idle: args.idle_timeout,
        subscribed: false,
        attempts: 0,
    };
    let start = follow.output.place.cursor().unwrap_or_else(|| "now".into());
    eprintln!(
        "switchboard: following {} over {} from {start}",
        args.topics.join(", "),
        args.transport.name()
    );
    let mut delay = FIRST_DELAY;
    loop {
        follow.subscribed = false;
        let ended = match args.transport {
            TransportKind::Ws => follow.websocket().await,
            TransportKind::Sse => follow.event_stream().await,
            TransportKind::Poll => follow.poll().await,
        };
        let why = match ended {
            Ok(why) => why,
            Err(error) if error.is_transient() => error.to_string(),
            Err(error) => return Err(error),
        };
        if follow.subscribed {
            delay = FIRST_DELAY;
        }
        follow.attempts += 1;
        eprintln!(
            "switchboard: {why}; reconnecting in {}",
            humantime::format_duration(delay)
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(LONGEST_DELAY);
    }
}

fn parse_cursor(text: &str, from: &str) -> Result<Cursor, CliError> {
    Cursor::parse(text).map_err(|e| CliError::Usage(format!("{from}: {e}")))
}

/// Where the subscriber is: one position per topic, once known.
#[derive(Debug)]
struct Place {
    topics: Vec<(TopicName, Option<Position>)>,
}

impl Place {
    fn new(topics: Vec<TopicName>, since: Option<&Cursor>) -> Place {
        Place {
            topics: topics
                .into_iter()
                .map(|topic| {
                    let position = since.and_then(|cursor| cursor.position_of(&topic));
                    (topic, position)
                })
                .collect(),
        }
    }

    /// The cursor over every topic with a known position; `None` while there is none.
    fn cursor(&self) -> Option<String> {
        let positions: Vec<Position> = self.topics.iter().filter_map(|(_, p)| *p).collect();
        (!positions.is_empty()).then(|| Cursor::from_positions(positions).to_string())
    }

    /// Whether every topic has a position (otherwise some would start from "now").
    fn is_complete(&self) -> bool {
        self.topics.iter().all(|(_, position)| position.is_some())
    }

    /// Moves `topic` to `position` (a message id or a starting position); other topics'
    /// positions are the gateway's business, not this subscriber's.
    fn set(&mut self, topic: &str, position: &str) -> Result<(), CliError> {
        let position = Position::parse(position).map_err(|e| {
            CliError::Failed(format!("the gateway sent a bad position for {topic}: {e}"))
        })?;
        for (name, known) in &mut self.topics {
            if name.as_str() == topic {
                *known = Some(position);
            }
        }
        Ok(())
    }

    fn set_all(&mut self, positions: &Positions) -> Result<(), CliError> {
        for (topic, position) in positions {
            self.set(topic, position)?;
        }
        Ok(())
    }
}

/// Stdout and the cursor file, kept in step.
#[derive(Debug)]
struct Output {
    place: Place,
    /// Lines printed since the last commit, written out at the commit.
    pending: Vec<u8>,
    cursor_file: Option<CursorFile>,
}

impl Output {
    /// Adds a message to the output and moves the place past it (both take effect at the
    /// next [`commit`](Self::commit)).
    fn print(&mut self, envelope: &str) -> Result<(), CliError> {
        let head = EnvelopeHead::of(envelope).map_err(CliError::Failed)?;
        self.place.set(&head.topic, &head.id)?;
        self.pending.extend_from_slice(envelope.as_bytes());
        self.pending.push(b'\n');
        Ok(())
    }

    /// Writes and flushes what was printed, then records the place in the cursor file, in
    /// that order, with no await in between. The new cursor is written to the temporary file
    /// first, so that only a `rename` separates the output from its record.
    fn commit(&mut self) -> Result<(), CliError> {
        let prepared = match (&mut self.cursor_file, self.place.cursor()) {
            (Some(file), Some(cursor)) => file.prepare(&cursor)?,
            _ => false,
        };
        if !self.pending.is_empty() {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&self.pending)
                .and_then(|()| stdout.flush())
                .map_err(CliError::from_output)?;
            self.pending.clear();
        }
        match &mut self.cursor_file {
            Some(file) if prepared => file.replace(),
            _ => Ok(()),
        }
    }
}

/// A `sub` run: its connection to the gateway and its output.
#[derive(Debug)]
struct Follow {
    client: HttpClient,
    output: Output,
    transport: TransportKind,
    idle: Duration,
    /// Whether the current connection got as far as a subscription (it then resets the
    /// reconnection delay).
    subscribed: bool,
    /// Connections lost so far.
    attempts: u64,
}

impl Follow {
    /// The query every transport takes: the topics and, once there is one, the cursor.
    fn query(&self, extra: Option<(&str, &str)>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (topic, _) in &self.output.place.topics {
            query.append_pair("topic", topic.as_str());
        }
        if let Some(cursor) = self.output.place.cursor() {
            query.append_pair("since", &cursor);
        }
        if let Some((name, value)) = extra {
            query.append_pair(name, value);
        }
        query.finish()
    }

    /// The subscription is in place at `positions`: they are recorded, and a reconnection
    /// is reported.
    fn subscribed(&mut self, positions: &Positions) -> Result<(), CliError> {
        self.output.place.set_all(positions)?;
        self.output.commit()?;
        if !self.subscribed && self.attempts > 0 {
            eprintln!(
                "switchboard: reconnected over {}; resuming from {}",
                self.transport.name(),
                self.output.place.cursor().unwrap_or_default()
            );
        }
        self.subscribed = true;
        Ok(())
    }

    /// One WebSocket connection, until it ends; returns why.
    async fn websocket(&mut self) -> Result<String, CliError> {
        let base = self.client.base().clone();
        let url = base.ws_url(&base.target("/ws", &self.query(None)));
        let mut request = url
            .into_client_request()
            .map_err(|e| CliError::Usage(format!("cannot make a WebSocket request: {e}")))?;
        if let Some(value) = self.client.authorization() {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, value.clone());
        }
        request.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("switchboard-cli/", env!("CARGO_PKG_VERSION"))),
        );
        let io = connect(&base).await?;
        let mut socket = match tokio_tungstenite::client_async(request, io).await {
            Ok((socket, _)) => socket,
            Err(tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                return Err(refusal_of(response.status().as_u16(), body));
            }
            Err(e) => {
                return Err(CliError::CannotConnect(format!(
                    "{}: WebSocket handshake: {e}",
                    base.shown()
                )));
            }
        };
        loop {
            let frame = match tokio::time::timeout(self.idle, socket.next()).await {
                Err(_) => return Ok(self.silent()),
                Ok(None) => return Ok("the connection closed".into()),
                Ok(Some(Err(e))) => return Ok(format!("the connection broke: {e}")),
                Ok(Some(Ok(frame))) => frame,
            };
            match frame {
                tungstenite::Message::Text(text) => {
                    match WsFrame::parse(&text).map_err(CliError::Failed)? {
                        WsFrame::Message(envelope) => {
                            self.output.print(&envelope)?;
                            self.output.commit()?;
                        }
                        WsFrame::Subscribed(positions) => self.subscribed(&positions)?,
                        WsFrame::Reset(reset) => report_reset(&reset),
                        WsFrame::Error { code, message } => {
                            return Err(CliError::Refused {
                                status: 0,
                                code,
                                message,
                            });
                        }
                        WsFrame::Other => {}
                    }
                }
                tungstenite::Message::Close(frame) => {
                    return Ok(match frame {
                        Some(frame) if !frame.reason.is_empty() => format!(
                            "the gateway closed the connection ({} {})",
                            u16::from(frame.code),
                            frame.reason
                        ),
                        Some(frame) => format!(
                            "the gateway closed the connection ({})",
                            u16::from(frame.code)
                        ),
                        None => "the gateway closed the connection".into(),
                    });
                }
                // Pings are answered by tungstenite itself.
                _ => {}
            }
        }
    }

    /// One event stream, until it ends; returns why.
    async fn event_stream(&mut self) -> Result<String, CliError> {
        let target = self.client.base().target("/events", &self.query(None));
        let response = self.client.send(Method::GET, &target, None).await?;
        let mut body = response.into_body();
        let mut reader = SseReader::default();
        let mut items = Vec::new();
        let mut slow = false;
        loop {
            let frame = match tokio::time::timeout(self.idle, body.frame()).await {
                Err(_) => return Ok(self.silent()),
                Ok(None) if slow => {
                    return Ok("the gateway let go of this slow consumer".into());
                }
                Ok(None) => return Ok("the event stream ended".into()),
                Ok(Some(Err(e))) => return Ok(format!("the event stream broke: {e}")),
                Ok(Some(Ok(frame))) => frame,
            };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            reader
                .feed(data, &mut items)
                .map_err(|e| CliError::Failed(format!("the gateway sent {e}")))?;
            for item in items.drain(..) {
                match item {
                    SseItem::Event { name, data } => match name.as_str() {
                        "message" => self.output.print(&data)?,
                        "subscribed" => {
                            let subscribed: super::frames::SseSubscribed =
                                serde_json::from_str(&data).map_err(|e| {
                                    CliError::Failed(format!("a bad subscribed event ({e})"))
                                })?;
                            self.subscribed(&subscribed.positions)?;
                        }
                        "reset" => {
                            let reset: Reset = serde_json::from_str(&data).map_err(|e| {
                                CliError::Failed(format!("a bad reset event ({e})"))
                            })?;
                            report_reset(&reset);
                        }
                        _ => {}
                    },
                    SseItem::Comment(comment) => {
                        slow |= comment.starts_with("slow consumer");
                    }
                }
            }
            // Everything that came in this piece of the stream, in one write.
            self.output.commit()?;
        }
    }

    /// Polls until a poll fails; returns why.
    async fn poll(&mut self) -> Result<String, CliError> {
        loop {
            // Until every topic has a position, ask for one at once: a held poll that broke
            // would lose what was published meanwhile.
            let extra = (!self.output.place.is_complete()).then_some(("timeout", "0"));
            let target = self.client.base().target("/poll", &self.query(extra));
            let answer = async {
                let response = self.client.send(Method::GET, &target, None).await?;
                read_body(response, POLL_REPLY_LIMIT).await
            };
            let body = match tokio::time::timeout(self.idle, answer).await {
                Err(_) => return Ok(self.silent()),
                Ok(body) => body?,
            };
            let reply: PollReply<'_> = serde_json::from_slice(&body)
                .map_err(|e| CliError::Failed(format!("a bad poll reply ({e})")))?;
            for reset in &reply.reset {
                report_reset(reset);
            }
            for envelope in &reply.messages {
                self.output.print(envelope.get())?;
            }
            self.output.place.set_all(&reply.positions)?;
            if self.subscribed {
                self.output.commit()?;
            } else {
                self.subscribed(&reply.positions)?;
            }
        }
    }

    fn silent(&self) -> String {
        format!(
            "nothing from the gateway for {}",
            humantime::format_duration(self.idle)
        )
    }
}

/// Tells the user, on stderr, that messages of a topic were missed and cannot be had.
fn report_reset(reset: &Reset) {
    let why = match reset.reason.as_str() {
        "retention" => "messages after the cursor were dropped by retention",
        "history_lost" => {
            "the gateway lost the topic's history, as when it restarts or forgets an idle topic"
        }
        _ => "the cursor could not be honoured",
    };
    eprintln!(
        "switchboard: reset on {} ({}): {why}; continuing from the oldest message retained",
        reset.topic, reset.reason
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicName {
        TopicName::new(name).expect("valid")
    }

    /// A cursor for several topics keeps the positions of the topics followed, and the cursor
    /// it makes resumes each of them.
    #[test]
    fn the_place_is_one_cursor_over_every_topic() {
        let a = topic("a");
        let b = topic("b");
        let tag = |t: &TopicName| switchboard_hub::position::topic_tag(t);
        let at = |t: &TopicName, seq: u64| Position {
            tag: tag(t),
            epoch: 5,
            seq,
        };
        let since = Cursor::from_positions(vec![at(&a, 1), at(&topic("other"), 9)]);
        let mut place = Place::new(vec![a.clone(), b.clone()], Some(&since));
        assert!(!place.is_complete());
        assert_eq!(place.cursor(), Some(at(&a, 1).to_string()));
        place.set("b", &at(&b, 4).to_string()).expect("valid");
        place.set("a", &at(&a, 2).to_string()).expect("valid");
        assert!(place.is_complete());
        let cursor = Cursor::parse(&place.cursor().expect("some")).expect("a cursor");
        assert_eq!(cursor.position_of(&a), Some(at(&a, 2)));
        assert_eq!(cursor.position_of(&b), Some(at(&b, 4)));
        assert!(place.set("a", "nonsense").is_err());
        assert_eq!(Place::new(vec![b], None).cursor(), None);
    }
}
