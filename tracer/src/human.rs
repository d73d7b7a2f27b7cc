//! What every renderer shares: the three output formats, figures for
//! people (durations, sizes, counts that agree with their nouns), and text
//! made safe for Markdown and HTML.

/// How a report is written: for a terminal, for a pull request, for
/// programs (the report and the recommendations share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Text, Format::Markdown, Format::Json];

    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Json => "json",
        }
    }
}

/// "1 process", "3 processes": a count and its noun, agreeing.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "12.3 ms", "1.20 s", "850 µs".
pub fn duration(ns: u64) -> String {
    match ns {
        0..1_000_000 => format!("{:.0} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// "0 B", "12.0 KiB", "3.4 MiB".
pub fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.2} GiB", n as f64 / 1_073_741_824.0),
    }
}

/// Text from the traced system (paths, argv, unit names) made inert in a
/// Markdown table cell: what Markdown or HTML would interpret is escaped,
/// and line breaks (which would end the row) become spaces.
pub fn markdown_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Text made inert inside an HTML element such as `<pre>` (which Markdown
/// passes through): only `&`, `<` and `>` are escaped, so it reads as is.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(12 * 1024), "12.0 KiB");
        assert_eq!(bytes(3_565_158), "3.4 MiB");
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1, "process", "processes"), "1 process");
        assert_eq!(count(0, "process", "processes"), "0 processes");
        assert_eq!(count(2, "process", "processes"), "2 processes");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(850_000), "850 µs");
        assert_eq!(duration(12_345_678), "12.35 ms");
        assert_eq!(duration(1_200_000_000), "1.20 s");
    }

    #[test]
    fn escapes_what_html_interprets() {
        assert_eq!(html_escape("<svg onload=x>&amp; a|b"), "&lt;svg onload=x&gt;&amp;amp; a|b");
    }

    #[test]
    fn escapes_what_markdown_interprets() {
        assert_eq!(markdown_escape("a|b <script>&x\ny"), "a\\|b &lt;script&gt;&amp;x y");
    }
}
