//! `switchboard check-config`: loads the configuration exactly as `serve` would (flags,
//! environment, `--config` file, defaults, and the same checks), and prints every setting with
//! its value and where the value came from. Secrets (keys, tokens, passwords in URLs) are
//! shown as hidden.

use std::fmt::Write as _;
use std::io::Write;

use clap::ArgMatches;

use super::CliError;
use crate::config::{Config, SettingSource};

/// What a hidden value is shown as.
const HIDDEN: &str = "(hidden)";

pub fn run(matches: &ArgMatches) -> Result<(), CliError> {
    let (config, sources) =
        Config::load_explained(matches).map_err(|e| CliError::Usage(e.to_string()))?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(render(&config, &sources)?.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(CliError::from_output)?;
    eprintln!("switchboard: the configuration is valid");
    Ok(())
}

/// The table: `setting  value  source`, one line per setting, values as TOML writes them.
pub fn render(config: &Config, sources: &[(String, SettingSource)]) -> Result<String, CliError> {
    let values = toml::Table::try_from(config)
        .map_err(|e| CliError::Failed(format!("cannot show the settings: {e}")))?;
    let rows: Vec<[String; 3]> = sources
        .iter()
        .map(|(name, source)| {
            let value = match (name.as_str(), values.get(name)) {
                ("config", _) => config
                    .config
                    .as_ref()
                    .map_or_else(|| "none".into(), |path| format!("{:?}", path.display())),
                (name, _) if is_secret(name) => HIDDEN.into(),
                (_, Some(value)) => hide_url_passwords(value).to_string(),
                (_, None) => "none".into(),
            };
            [name.clone(), value, source.as_str().to_owned()]
        })
        .collect();
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .chain(std::iter::once(7))
            .max()
            .unwrap_or(0)
    };
    let (name_width, value_width) = (width(0), width(1));
    let mut out = format!(
        "{:<name_width$}  {:<value_width$}  source\n",
        "setting", "value"
    );
    for [name, value, source] in &rows {
        let _ = writeln!(out, "{name:<name_width$}  {value:<value_width$}  {source}");
    }
    Ok(out)
}

/// Settings whose value is a credential.
fn is_secret(name: &str) -> bool {
    ["key", "token", "secret", "password"]
        .iter()
        .any(|word| name.contains(word))
}

/// The value with the password of any `scheme://user:password@host` URL in it hidden.
fn hide_url_passwords(value: &toml::Value) -> toml::Value {
    match value {
        toml::Value::String(text) => toml::Value::String(hide_url_password(text)),
        toml::Value::Array(items) => {
            toml::Value::Array(items.iter().map(hide_url_passwords).collect())
        }
        other => other.clone(),
    }
}

fn hide_url_password(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let rest = &text[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return text.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:{HIDDEN}{}",
            &text[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_hidden() {
        assert_eq!(
            hide_url_password("redis://app:s3cret@10.0.0.1:6379/0"),
            "redis://app:(hidden)@10.0.0.1:6379/0"
        );
        assert_eq!(
            hide_url_password("rediss://:s3cret@host"),
            "rediss://:(hidden)@host"
        );
        assert_eq!(hide_url_password("redis://host:6379"), "redis://host:6379");
        assert_eq!(hide_url_password("redis://user@host"), "redis://user@host");
        assert_eq!(hide_url_password("1h"), "1h");
        assert!(is_secret("admin_key"));
        assert!(!is_secret("listen"));
    }

    #[test]
    fn every_setting_is_listed_with_its_value_and_source() {
        let config = Config {
            redis: Some("redis://u:p@127.0.0.1:6380".into()),
            ..Config::default()
        };
        let sources = vec![
            ("listen".to_owned(), SettingSource::Default),
            ("config".to_owned(), SettingSource::Default),
            ("heartbeat_interval".to_owned(), SettingSource::File),
            ("redis".to_owned(), SettingSource::Environment),
            ("static_dir".to_owned(), SettingSource::Default),
            ("allowed_origins".to_owned(), SettingSource::Flag),
        ];
        assert_eq!(
            render(&config, &sources).expect("renders"),
            "\
setting             value                                source
listen              \"127.0.0.1:8080\"                     default
config              none                                 default
heartbeat_interval  \"15s\"                                file
redis               \"redis://u:(hidden)@127.0.0.1:6380\"  environment
static_dir          none                                 default
allowed_origins     []                                   flag
"
        );
    }
}
