//! How the CLI prints: aligned tables for people, JSON or YAML for scripts.

use serde::Serialize;

#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

/// The `-o` flag shared by commands that print resources.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct OutputFlag {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
}

/// Prints `value` as JSON or YAML, or, for tables, as `headers` + `rows`.
pub fn print<T: Serialize>(
    format: Format,
    value: &T,
    headers: &[&str],
    rows: impl FnOnce() -> Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml::to_string(value)?),
        Format::Table => print!("{}", table(headers, &rows())),
    }
    Ok(())
}

/// Prints resources: one as an object (`get`, `create`), several as a
/// list (`list`); the same rows either way for tables.
pub fn print_resources<T: Serialize>(
    format: Format,
    items: &[T],
    single: bool,
    headers: &[&str],
    rows: impl FnOnce() -> Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match items.first() {
        Some(item) if single => print(format, item, headers, rows),
        _ => print(format, &items, headers, rows),
    }
}

pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count())
                    + 2;
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let text = super::table(
            &["NAME", "URL"],
            &[
                vec!["a".into(), "/x".into()],
                vec!["longer".into(), "/y".into()],
            ],
        );
        assert_eq!(text, "NAME    URL\na       /x\nlonger  /y\n");
    }
}
