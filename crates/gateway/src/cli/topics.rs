//! `switchboard topics` and `switchboard top`: the admin API's list of topics
//! (`GET /admin/topics`, docs/ADMIN.md) as a table, once or refreshed every second.

use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use axum::http::Method;
use clap::Args;
use serde::Deserialize;

use super::CliError;
use super::http::{BaseUrl, HttpClient, read_body};

/// The admin API's address and key.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The gateway's base URL, or its admin listener's (`--admin-listen`).
    #[arg(long, env = "SWITCHBOARD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Sent as `Authorization: Bearer KEY`, when the gateway has an admin key.
    #[arg(long, env = "SWITCHBOARD_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
}

/// List topics: subscribers by transport, retained messages, messages per second.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub admin: AdminArgs,

    /// Only topics whose name starts with this.
    #[arg(long)]
    pub prefix: Option<String>,

    /// At most this many topics (the gateway has its own default and maximum).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// The busiest topics, refreshed every second, until Ctrl-C or `q`.
#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub admin: AdminArgs,

    /// Only topics whose name starts with this.
    #[arg(long)]
    pub prefix: Option<String>,

    /// How many topics to show.
    #[arg(long, default_value_t = 20)]
    pub rows: usize,

    /// How often to refresh.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
}

/// `GET /admin/topics`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TopicList {
    pub topics: Vec<TopicStats>,
    /// More topics match than were listed.
    #[serde(default)]
    pub more: bool,
}

/// One topic of the list.
#[derive(Debug, Clone, Deserialize)]
pub struct TopicStats {
    pub topic: String,
    pub subscribers: Subscribers,
    pub retained: Retained,
    pub first: Option<String>,
    pub last: Option<String>,
    pub rate_per_second: f64,
}

/// Subscribers on this node, by transport.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Subscribers {
    #[serde(default)]
    pub ws: u64,
    #[serde(default)]
    pub sse: u64,
    #[serde(default)]
    pub poll: u64,
}

impl Subscribers {
    fn total(&self) -> u64 {
        self.ws + self.sse + self.poll
    }
}

/// What the topic retains.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Retained {
    pub messages: u64,
    pub bytes: u64,
}

/// The admin API client.
#[derive(Debug)]
struct Admin {
    client: HttpClient,
}

impl Admin {
    fn new(args: &AdminArgs) -> Result<Admin, CliError> {
        let base = BaseUrl::parse(&args.url)?;
        Ok(Admin {
            client: HttpClient::new(base, args.admin_key.as_deref())?,
        })
    }

    async fn topics(
        &mut self,
        prefix: Option<&str>,
        limit: Option<usize>,
    ) -> Result<TopicList, CliError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(prefix) = prefix {
            query.append_pair("prefix", prefix);
        }
        if let Some(limit) = limit {
            query.append_pair("limit", &limit.to_string());
        }
        let target = self.client.base().target("/admin/topics", &query.finish());
        let response = match self.client.send(Method::GET, &target, None).await {
            Err(CliError::Refused { status: 404, .. }) => {
                return Err(CliError::Failed(format!(
                    "{} has no admin API (404): with --admin-listen, point --url at that address",
                    self.client.base().shown()
                )));
            }
            answer => answer?,
        };
        let body = read_body(response, 64 << 20).await?;
        serde_json::from_slice(&body).map_err(|e| {
            CliError::Failed(format!(
                "the gateway's /admin/topics answer is not a topic list ({e})"
            ))
        })
    }
}

pub async fn topics(args: TopicsArgs) -> Result<(), CliError> {
    let list = Admin::new(&args.admin)?
        .topics(args.prefix.as_deref(), args.limit)
        .await?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(table(&list.topics).as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(CliError::from_output)?;
    if list.more {
        eprintln!("switchboard: more topics match; narrow with --prefix or raise --limit");
    }
    Ok(())
}

pub async fn top(args: TopArgs) -> Result<(), CliError> {
    let mut admin = Admin::new(&args.admin)?;
    let shown = admin.client.base().shown();
    let _terminal = KeyMode::enter();
    let mut quit = quit_key();
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is now: a screen is always shown before `q` is looked at.
    ticker.tick().await;
    loop {
        let screen = match admin.topics(args.prefix.as_deref(), None).await {
            Ok(mut list) => {
                busiest_first(&mut list.topics);
                list.topics.truncate(args.rows);
                format!(
                    "switchboard top: {shown}, {} (q or Ctrl-C to quit)\n\n{}",
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
                    table(&list.topics)
                )
            }
            Err(error) if error.is_transient() => format!("switchboard top: {error}\n"),
            Err(error) => return Err(error),
        };
        // Home, clear the screen, then the table.
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(format!("\x1b[H\x1b[2J{screen}").as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(CliError::from_output)?;
        drop(stdout);
        tokio::select! {
            biased;
            // `None` (stdin ended without a `q`) disables this branch: Ctrl-C still quits.
            Some(()) = quit.recv() => return Ok(()),
            _ = ticker.tick() => {}
        }
    }
}

/// Busiest first: by messages per second, then by subscribers, then by name.
pub fn busiest_first(topics: &mut [TopicStats]) {
    topics.sort_by(|a, b| {
        b.rate_per_second
            .total_cmp(&a.rate_per_second)
            .then(b.subscribers.total().cmp(&a.subscribers.total()))
            .then_with(|| a.topic.cmp(&b.topic))
    });
}

/// The topics as an aligned table: text left, numbers right.
pub fn table(topics: &[TopicStats]) -> String {
    let header = [
        "TOPIC", "WS", "SSE", "POLL", "RETAINED", "BYTES", "MSG/S", "LAST",
    ];
    let mut rows = vec![header.map(str::to_owned)];
    for topic in topics {
        rows.push([
            topic.topic.clone(),
            topic.subscribers.ws.to_string(),
            topic.subscribers.sse.to_string(),
            topic.subscribers.poll.to_string(),
            topic.retained.messages.to_string(),
            bytes(topic.retained.bytes),
            format!("{:.1}", topic.rate_per_second),
            topic.last.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut widths = [0; 8];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
            let left_aligned = column == 0 || column == 7;
            if column > 0 {
                line.push_str("  ");
            }
            if left_aligned {
                let _ = write!(line, "{cell:<width$}");
            } else {
                let _ = write!(line, "{cell:>width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if topics.is_empty() {
        out.push_str("(no topics)\n");
    }
    out
}

/// A byte count in the largest binary unit that keeps it at least 1.
fn bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The terminal, while `top` runs, delivers keys as they are typed (not a line at a time) and
/// does not echo them; Ctrl-C still interrupts. Restored when dropped. `stty` does it, so that
/// no terminal library is needed for one setting; nothing happens when stdin is not a terminal.
#[derive(Debug)]
struct KeyMode {
    saved: Option<String>,
}

impl KeyMode {
    fn enter() -> KeyMode {
        if !std::io::stdin().is_terminal() {
            return KeyMode { saved: None };
        }
        let saved = std::process::Command::new("stty")
            .arg("-g")
            .stdin(std::process::Stdio::inherit())
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
        if saved.is_some() {
            let _ = std::process::Command::new("stty")
                .args(["-icanon", "-echo", "min", "1"])
                .stdin(std::process::Stdio::inherit())
                .status();
        }
        KeyMode { saved }
    }
}

impl Drop for KeyMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = std::process::Command::new("stty")
                .arg(saved)
                .stdin(std::process::Stdio::inherit())
                .status();
        }
    }
}

/// Completes when `q` is typed (or stdin ends, when it is not a terminal: nothing can be
/// typed then, and `top` runs until Ctrl-C). A thread of its own reads stdin, since a read of
/// a terminal cannot be cancelled.
fn quit_key() -> tokio::sync::mpsc::Receiver<()> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let terminal = std::io::stdin().is_terminal();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut byte = [0u8; 1];
        loop {
            match stdin.read(&mut byte) {
                Ok(1) if byte[0] == b'q' || byte[0] == b'Q' => break,
                Ok(1) => {}
                // End of input: only a terminal's user could still type `q`.
                _ if terminal => break,
                _ => return,
            }
        }
        let _ = sender.blocking_send(());
    });
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `GET /admin/topics` (docs/ADMIN.md).
    const FIXTURE: &str = r#"{"topics":[
        {"topic":"chat","subscribers":{"ws":2,"sse":1,"poll":0},"retained":{"messages":12,"bytes":3456},"first":"1j6ai8g6ff-hodxx5zpv7-1","last":"1j6ai8g6ff-hodxx5zpv7-12","rate_per_second":0.4},
        {"topic":"news/eu","subscribers":{"ws":0,"sse":0,"poll":3},"retained":{"messages":0,"bytes":0},"first":null,"last":null,"rate_per_second":0.0},
        {"topic":"ticks","subscribers":{"ws":1,"sse":0,"poll":0},"retained":{"messages":1000,"bytes":2097152},"first":"a-b-9001","last":"a-b-10000","rate_per_second":250.25}
    ],"more":true}"#;

    fn fixture() -> TopicList {
        serde_json::from_str(FIXTURE).expect("the fixture parses")
    }

    #[test]
    fn topics_print_as_an_aligned_table() {
        let list = fixture();
        assert!(list.more);
        assert_eq!(
            table(&list.topics),
            "\
TOPIC    WS  SSE  POLL  RETAINED    BYTES  MSG/S  LAST
chat      2    1     0        12  3.4 KiB    0.4  1j6ai8g6ff-hodxx5zpv7-12
news/eu   0    0     3         0      0 B    0.0  -
ticks     1    0     0      1000  2.0 MiB  250.2  a-b-10000
"
        );
        assert_eq!(
            table(&[]),
            "TOPIC  WS  SSE  POLL  RETAINED  BYTES  MSG/S  LAST\n(no topics)\n"
        );
    }

    #[test]
    fn top_puts_the_busiest_first() {
        let mut topics = fixture().topics;
        busiest_first(&mut topics);
        let order: Vec<&str> = topics.iter().map(|t| t.topic.as_str()).collect();
        // By rate; at equal rate (0.0 would tie with another idle topic) by subscribers.
        assert_eq!(order, ["ticks", "chat", "news/eu"]);
        topics[0].rate_per_second = 0.0;
        topics[1].rate_per_second = 0.0;
        busiest_first(&mut topics);
        let order: Vec<&str> = topics.iter().map(|t| t.topic.as_str()).collect();
        assert_eq!(order, ["chat", "news/eu", "ticks"]);
    }

    #[test]
    fn byte_counts_are_readable() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(bytes(3 << 40), "3.0 TiB");
    }
}
