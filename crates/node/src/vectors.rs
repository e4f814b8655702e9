//! `mixnode vectors verify FILE...`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use mix_sphinx::vectors::verify_json;

/// Verifies each file and prints `N/N cases ok` per file and every failing case and field.
pub(crate) fn verify(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut all_ok = true;
    for path in files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let report = match verify_json(&text) {
            Ok(report) => report,
            Err(e) => {
                println!("{}: {e}", path.display());
                all_ok = false;
                continue;
            }
        };
        println!(
            "{}: {}/{} cases ok (payload cipher {:?})",
            path.display(),
            report.passed(),
            report.cases.len(),
            report.cipher
        );
        for case in &report.cases {
            for failure in &case.failures {
                println!(
                    "  FAIL {} {:?}: {}: {}",
                    case.section, case.name, failure.field, failure.detail
                );
            }
        }
        all_ok &= report.is_ok();
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
