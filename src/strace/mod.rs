//! Reading `strace` output and drawing it: the front door's `trace NN` (a tool around
//! the lessons, not a lesson). `parse` reads strace's lines into calls; `picture`
//! keeps the socket calls and draws them as a sequence diagram (SVG and text).

pub mod parse;
pub mod picture;
