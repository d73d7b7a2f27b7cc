//! The JSON report (`docs/report-schema.md`): the analysis itself.

use crate::analysis::Analysis;

pub fn render(analysis: &Analysis) -> String {
    let mut out = serde_json::to_string_pretty(analysis).expect("the analysis serializes");
    out.push('\n');
    out
}
