//! The adversarial suite: each finding of the hostile review (issue 13)
//! that once let an Allow slip through, crashed the process or locked a
//! patient out, replayed against the real binary. Tests are named
//! `finding_NN_…` after the finding they pin, so a failure names the hole
//! that reopened.

mod connections;
mod consents;
mod edges;
mod evaluation;
mod facts;
mod limits;
mod operations;
mod reload;
