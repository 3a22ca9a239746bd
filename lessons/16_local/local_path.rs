//! Where lesson 16's server puts its socket file when no `--path` is given, and how
//! both programs show a local address. (Shared by the server and the client of this
//! lesson only.)

/// `$TMPDIR/socket-workbook-UID/16_local.sock` (usually `/tmp/...`). The directory is
/// the user's own (the uid is in its name, and the server makes it with mode 0700), so
/// two users on one machine never fight over one name, and nobody else can even reach
/// the socket inside it. (Defined in the library, where `cargo run -- check 16` finds
/// it too.)
pub use workbook::protocol::local::{default_dir, default_path};

/// The text after `listening on `: `unix:/tmp/.../16_local.sock` for a file,
/// `unix:@NAME` for an abstract name (as `ss -x` shows them).
pub fn shown(path: Option<&std::path::Path>, abstract_name: Option<&str>) -> String {
    match (path, abstract_name) {
        (_, Some(name)) => format!("unix:@{name}"),
        (Some(path), None) => format!("unix:{}", path.display()),
        (None, None) => "unix:(unnamed)".into(),
    }
}
