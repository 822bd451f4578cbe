//! `switchboard pub TOPIC [DATA]`: publishes one message, or one per line of stdin, over HTTP
//! (`POST /events?topic=…`), one after the other on one kept-alive connection, so that they are
//! published in order; prints each message's id.

use std::io::Write;

use axum::http::Method;
use bytes::Bytes;
use clap::Args;
use serde::Deserialize;
use switchboard_hub::TopicName;
use tokio::io::AsyncBufReadExt;

use super::http::{BaseUrl, HttpClient, read_body};
use super::{CliError, ClientArgs};

/// Publish messages and print their ids.
#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// The topic to publish to.
    pub topic: String,

    /// The message; without it, every line of stdin is one message.
    pub data: Option<String>,

    /// The message (or each line) is JSON, published as it is; otherwise it is text,
    /// published as a JSON string.
    #[arg(long)]
    pub json: bool,
}

/// `{"topic":…,"id":…}`, the answer to a publish.
#[derive(Debug, Deserialize)]
struct Published {
    id: String,
}

/// The largest answer to a publish worth reading.
const ANSWER_LIMIT: usize = 64 * 1024;

pub async fn run(args: PublishArgs) -> Result<(), CliError> {
    let topic = TopicName::new(&args.topic)
        .map_err(|e| CliError::Usage(format!("topic {:?}: {e}", args.topic)))?;
    let base = BaseUrl::parse(&args.client.url)?;
    let mut client = HttpClient::new(base, args.client.token.as_deref())?;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("topic", topic.as_str())
        .finish();
    let target = client.base().target("/events", &query);
    // JSON goes as it is; anything else the gateway takes as text (docs/PROTOCOL.md).
    let content_type = if args.json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut publish = async |data: Vec<u8>| -> Result<(), CliError> {
        let response = client
            .send(
                Method::POST,
                &target,
                Some((content_type, Bytes::from(data))),
            )
            .await?;
        let body = read_body(response, ANSWER_LIMIT).await?;
        let published: Published = serde_json::from_slice(&body).map_err(|e| {
            CliError::Failed(format!(
                "the gateway's answer is not {{\"topic\":…,\"id\":…}} ({e})"
            ))
        })?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", published.id)
            .and_then(|()| stdout.flush())
            .map_err(CliError::from_output)
    };
    if let Some(data) = args.data {
        return publish(data.into_bytes()).await;
    }
    // Read on tokio's blocking pool, so that Ctrl-C still stops a `pub` waiting for a line.
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let read = lines
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| CliError::Failed(format!("cannot read stdin: {e}")))?;
        if read == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        publish(line.clone()).await.map_err(|error| match error {
            CliError::Refused {
                status,
                code,
                message,
            } => CliError::Refused {
                status,
                code,
                message: format!("line {number}: {message}"),
            },
            CliError::CannotConnect(why) => {
                CliError::CannotConnect(format!("line {number}: {why}"))
            }
            other => other,
        })?;
    }
    Ok(())
}
