//! Printing results: a readable table by default, JSON with `--output json`.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;
use serde::Serialize;

use crate::config::OutputFormat;

/// Prints `value` as JSON, or as a table of `headers` and `rows`.
pub fn print<T: Serialize>(
    format: OutputFormat,
    value: &T,
    headers: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        OutputFormat::Table => {
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header(headers.to_vec());
            for r in rows {
                table.add_row(r);
            }
            println!("{table}");
        }
    }
    Ok(())
}

/// Prints one object as `key: value` lines, or as JSON.
pub fn print_one<T: Serialize>(
    format: OutputFormat,
    value: &T,
    fields: Vec<(&str, String)>,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        OutputFormat::Table => {
            let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in fields {
                println!("{k:<width$}  {v}");
            }
        }
    }
    Ok(())
}

/// A status message: to stdout in table mode, as `{"status": …}` JSON otherwise.
pub fn done(format: OutputFormat, message: &str) {
    match format {
        OutputFormat::Json => println!("{}", serde_json::json!({ "status": "ok", "message": message })),
        OutputFormat::Table => println!("{message}"),
    }
}

pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}
