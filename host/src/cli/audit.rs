//! `audit verify`: the decision log checked from outside the server, so an
//! auditor need not trust the process that wrote it.

use super::args::AuditVerifyArgs;
use super::error::{CliError, Outcome};
use crate::audit::{self, Anchor, AuditTarget, VerifyFailure};

/// `consentry audit verify`: is the decision log as it was written, and does
/// it still hold the records anchored earlier? On success stdout is the
/// verdict, then `anchor: SEQ:HASH` for the head (none for an empty log), so
/// a script can keep the anchor for the next run.
pub async fn verify(args: &AuditVerifyArgs) -> Result<Outcome, CliError> {
    let target = AuditTarget::parse(&args.log).map_err(CliError::invalid)?;
    let anchors = args
        .anchors
        .iter()
        .map(|text| text.parse::<Anchor>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CliError::invalid(format!("invalid `--anchor`: {error}")))?;
    let anchored = anchors.len();
    let verified = audit::verify(&target, anchors).await.map_err(|failure| match failure {
        tampered @ (VerifyFailure::Break(_) | VerifyFailure::Truncated(_)) => {
            CliError::Tampered(Box::new(tampered))
        }
        unreadable @ VerifyFailure::Unreadable(_) => CliError::invalid(unreadable),
    })?;
    let against = match anchored {
        0 => String::new(),
        1 => ", including the anchored record".to_owned(),
        n => format!(", including the {n} anchored records"),
    };
    let noun = if verified.records == 1 { "record" } else { "records" };
    println!("intact: {} {noun} in `{}`{against}", verified.records, target.describe());
    if let Some(retired) = &verified.retired {
        let unchecked = match retired.unchecked_anchors {
            0 => String::new(),
            n => format!("; {n} anchor(s) given fall among them and cannot be checked"),
        };
        println!(
            "retired: {} records before seq {}, covered by anchor {}{unchecked}",
            retired.before_seq, retired.before_seq, retired.covered_by
        );
    }
    if let Some(head) = verified.head {
        println!("anchor: {head}");
    }
    Ok(Outcome::Done)
}
