//! docs/PROTOCOL.md is the contract: every error code and close code it lists is one the
//! gateway can produce, with the status it documents, and the other way round.

use std::collections::BTreeSet;

use crate::error::ErrorCode;
use crate::ws::close;

const PROTOCOL: &str = include_str!("../../../docs/PROTOCOL.md");

/// The rows of the first table after `marker`: its cells, trimmed.
fn table_after(marker: &str) -> Vec<Vec<String>> {
    let start = PROTOCOL
        .find(marker)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no {marker:?}"));
    PROTOCOL[start..]
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn error_codes_are_the_documented_ones() {
    let documented: BTreeSet<(u16, String)> = table_after("\n## Errors")
        .into_iter()
        .map(|row| {
            let status = row[0].parse().expect("a status");
            (status, row[1].trim_matches('`').to_owned())
        })
        .collect();
    let produced: BTreeSet<(u16, String)> = ErrorCode::ALL
        .iter()
        .map(|code| (code.status().as_u16(), code.as_str().to_owned()))
        .collect();
    assert_eq!(documented, produced);
}

#[test]
fn every_error_code_is_listed_once() {
    for (i, code) in ErrorCode::ALL.iter().enumerate() {
        assert_eq!(code.index(), i, "{code:?}");
    }
}

#[test]
fn close_codes_are_the_documented_ones() {
    let documented: BTreeSet<u16> = table_after("Close codes sent by the server:")
        .into_iter()
        .map(|row| row[0].parse().expect("a close code"))
        .collect();
    let produced: BTreeSet<u16> = close::ALL.into_iter().collect();
    assert_eq!(documented, produced);
}
