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

/// A metric value for a table: as Rust writes it (shortest round-trip digits), but in exponent
/// form where that would be a long run of zeros (`1e308`, not 309 digits; `1.5e-9`).
pub fn number(v: f64) -> String {
    let a = v.abs();
    if v.is_finite() && a != 0.0 && !(1e-5..1e16).contains(&a) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_stay_short() {
        use super::number;
        let cases = [
            (0.5, "0.5"),
            (3.0, "3"),
            (-2.25, "-2.25"),
            (0.0, "0"),
            (1e308, "1e308"),
            (-1.5e-9, "-1.5e-9"),
            (123456789.0, "123456789"),
            (1e16, "1e16"),
            (0.00001, "0.00001"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
        ];
        for (v, shown) in cases {
            assert_eq!(number(v), shown, "{v}");
        }
    }
}
