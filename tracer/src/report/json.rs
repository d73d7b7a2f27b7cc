//! The JSON report (`docs/report-schema.md`): the analysis itself, with
//! the recommendations made from it.

use serde::Serialize;

use crate::{analysis::Analysis, recommend::Recommendation};

pub fn render(analysis: &Analysis, recommendations: &[Recommendation]) -> String {
    #[derive(Serialize)]
    struct Report<'a> {
        #[serde(flatten)]
        analysis: &'a Analysis,
        recommendations: &'a [Recommendation],
    }
    let mut out =
        serde_json::to_string_pretty(&Report { analysis, recommendations }).expect("the report serializes");
    out.push('\n');
    out
}
