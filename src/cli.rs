//! The command line every lesson program shares.
//!
//! Every program takes `--host HOST`, `--port PORT` and `--help` (or `-h`); a lesson adds its own
//! flags with [`Cli::switch`] (on/off) and [`Cli::value`] (takes a value). Anything else
//! on the command line is a positional argument (the client's messages).
//!
//! A wrong flag or value prints a usage message on stderr and exits with status 2;
//! `--help` prints the usage on stdout and exits with status 0.
//!
//! A program whose name ends in `_client` connects: its `--port` is the server's
//! port, and `--port 0` (any free port, which only makes sense for a server that
//! binds) is a usage error. A message that starts with `-` goes after `--`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, IsTerminal, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// Exit status for a usage error (the convention of most Unix tools).
pub const USAGE_EXIT: i32 = 2;

struct Flag {
    name: &'static str,
    /// `Some(metavar)` for a flag that takes a value, `None` for a switch.
    metavar: Option<&'static str>,
    help: &'static str,
}

/// What a program accepts, built once at the top of `main`.
pub struct Cli {
    program: &'static str,
    about: &'static str,
    default_port: u16,
    /// `--host` when not given: 127.0.0.1, unless a lesson says otherwise.
    default_host: &'static str,
    positional: Option<(&'static str, &'static str)>,
    flags: Vec<Flag>,
}

/// The parsed command line.
#[derive(Debug)]
pub struct Args {
    pub host: String,
    pub port: u16,
    /// Positional arguments, in order (for a client: the messages to send).
    pub messages: Vec<String>,
    switches: Vec<&'static str>,
    values: HashMap<&'static str, String>,
    program: &'static str,
}

/// Why parsing stopped.
#[derive(Debug, PartialEq)]
pub enum CliError {
    /// `--help` was given; the text is the usage.
    Help(String),
    /// Something was wrong; the text says what, followed by the usage.
    Usage(String),
}

impl Cli {
    pub fn new(program: &'static str, about: &'static str, default_port: u16) -> Cli {
        Cli {
            program,
            about,
            default_port,
            default_host: "127.0.0.1",
            positional: None,
            flags: Vec::new(),
        }
    }

    /// Another default for `--host` than 127.0.0.1 (lesson 15's server: `::`).
    pub fn default_host(mut self, host: &'static str) -> Cli {
        self.default_host = host;
        self
    }

    /// A flag without a value, e.g. `--quiet`.
    pub fn switch(mut self, name: &'static str, help: &'static str) -> Cli {
        self.flags.push(Flag {
            name,
            metavar: None,
            help,
        });
        self
    }

    /// A flag with a value, e.g. `--rcvbuf BYTES`.
    pub fn value(mut self, name: &'static str, metavar: &'static str, help: &'static str) -> Cli {
        self.flags.push(Flag {
            name,
            metavar: Some(metavar),
            help,
        });
        self
    }

    /// Accept positional arguments, described in the usage as `[NAME...]`.
    pub fn positional(mut self, name: &'static str, help: &'static str) -> Cli {
        self.positional = Some((name, help));
        self
    }

    /// A client connects to a server; everything else binds (servers, the runner).
    fn is_client(&self) -> bool {
        self.program.ends_with("_client")
    }

    /// The usage text printed by `--help` and after a usage error.
    pub fn usage(&self) -> String {
        let mut text = format!("{}\n\nusage: {} [OPTIONS]", self.about, self.program);
        if let Some((name, _)) = self.positional {
            let _ = write!(text, " [{name}...]");
        }
        text.push_str("\n\noptions:\n");
        let (host_help, port_help) = if self.is_client() {
            (
                format!("the server's address (default {})", self.default_host),
                format!("the server's port (default {})", self.default_port),
            )
        } else {
            (
                format!("address to listen on (default {})", self.default_host),
                format!(
                    "port to listen on (default {}; 0 = any free port)",
                    self.default_port
                ),
            )
        };
        let mut rows: Vec<(String, String)> = vec![
            ("--host HOST".into(), host_help),
            ("--port PORT".into(), port_help),
        ];
        for flag in &self.flags {
            let left = match flag.metavar {
                Some(metavar) => format!("{} {metavar}", flag.name),
                None => flag.name.to_string(),
            };
            rows.push((left, flag.help.to_string()));
        }
        rows.push(("-h, --help".into(), "print this help and exit".into()));
        let width = rows.iter().map(|(left, _)| left.len()).max().unwrap_or(0);
        for (left, right) in rows {
            let _ = writeln!(text, "  {left:width$}  {right}");
        }
        if let Some((name, help)) = self.positional {
            let _ = writeln!(text, "\n{name}: {help}");
            let _ = writeln!(text, "(a {name} that starts with `-` goes after `--`)");
        }
        text
    }

    /// Parses `std::env::args()`; on `--help` prints the usage and exits 0, on a
    /// usage error prints it on stderr and exits 2.
    pub fn parse(self) -> Args {
        match self.try_parse(std::env::args().skip(1)) {
            Ok(args) => args,
            // write! and not print!: a closed stdout (`--help | head -1`) is no panic.
            Err(CliError::Help(text)) => {
                let _ = io::stdout().write_all(text.as_bytes());
                std::process::exit(0);
            }
            Err(CliError::Usage(text)) => {
                let _ = io::stderr().write_all(text.as_bytes());
                std::process::exit(USAGE_EXIT);
            }
        }
    }

    /// Parses the given arguments (without the program name).
    pub fn try_parse<I, S>(&self, args: I) -> Result<Args, CliError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut parsed = Args {
            host: self.default_host.to_string(),
            port: self.default_port,
            messages: Vec::new(),
            switches: Vec::new(),
            values: HashMap::new(),
            program: self.program,
        };
        let mut args = args.into_iter().map(Into::into);
        let mut only_positional = false;
        while let Some(arg) = args.next() {
            if !only_positional && arg == "-h" {
                return Err(CliError::Help(self.usage()));
            }
            if only_positional || !arg.starts_with("--") {
                if self.positional.is_none() {
                    return Err(self.error(&format!("unexpected argument '{arg}'")));
                }
                parsed.messages.push(arg);
                continue;
            }
            if arg == "--" {
                only_positional = true;
                continue;
            }
            // Both `--port 80` and `--port=80` are accepted.
            let (name, inline_value) = match arg.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (arg.clone(), None),
            };
            if name == "--help" {
                return Err(CliError::Help(self.usage()));
            }
            let metavar = match name.as_str() {
                "--host" | "--port" => Some("VALUE"),
                _ => match self.flags.iter().find(|flag| flag.name == name) {
                    Some(flag) => flag.metavar,
                    None => return Err(self.error(&format!("unknown option '{name}'"))),
                },
            };
            if metavar.is_none() {
                if inline_value.is_some() {
                    return Err(self.error(&format!("option '{name}' takes no value")));
                }
                let flag = self.flags.iter().find(|flag| flag.name == name);
                if let Some(flag) = flag {
                    parsed.switches.push(flag.name);
                }
                continue;
            }
            let value = match inline_value.or_else(|| args.next()) {
                Some(value) => value,
                None => return Err(self.error(&format!("option '{name}' needs a value"))),
            };
            match name.as_str() {
                "--host" => parsed.host = value,
                "--port" => {
                    let lowest = if self.is_client() { 1 } else { 0 };
                    parsed.port = value
                        .parse()
                        .ok()
                        .filter(|port| *port >= lowest)
                        .ok_or_else(|| {
                            self.error(&format!(
                                "invalid port '{value}': expected {lowest} to 65535"
                            ))
                        })?
                }
                _ => {
                    if let Some(flag) = self.flags.iter().find(|flag| flag.name == name) {
                        parsed.values.insert(flag.name, value);
                    }
                }
            }
        }
        Ok(parsed)
    }

    fn error(&self, message: &str) -> CliError {
        CliError::Usage(format!(
            "{}: error: {message}\n\n{}",
            self.program,
            self.usage()
        ))
    }
}

impl Args {
    /// Was this switch given?
    pub fn flag(&self, name: &str) -> bool {
        self.switches.contains(&name)
    }

    /// The value of a flag, converted to `T`; `None` if the flag was not given.
    /// A value that does not convert is a usage error (exit 2).
    pub fn get<T: FromStr>(&self, name: &str) -> Option<T> {
        match self.try_get(name) {
            Ok(value) => value,
            Err(message) => self.usage_error(&message),
        }
    }

    /// A value that parsed but makes no sense (`--conns 0`): the message on stderr
    /// with a pointer to `--help`, and exit status 2.
    pub fn usage_error(&self, message: &str) -> ! {
        eprintln!("{}: error: {message}", self.program);
        eprintln!("try: {} --help", self.program);
        std::process::exit(USAGE_EXIT);
    }

    /// Like [`Args::get`], with a default for a flag that was not given.
    pub fn get_or<T: FromStr>(&self, name: &str, default: T) -> T {
        self.get(name).unwrap_or(default)
    }

    /// The value of a flag, converted, or an error message saying why it does not convert.
    pub fn try_get<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        match self.values.get(name) {
            None => Ok(None),
            Some(text) => match text.parse() {
                Ok(value) => Ok(Some(value)),
                Err(_) => Err(format!("invalid value '{text}' for {name}")),
            },
        }
    }

    /// Calls `each` with every message of a client: the positional arguments, or,
    /// when there are none, each line of stdin (without its line ending) until an
    /// empty line or the end of input, with a `> ` prompt when stdin is a terminal.
    pub fn each_message(&self, mut each: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        if !self.messages.is_empty() {
            return self
                .messages
                .iter()
                .try_for_each(|message| each(message.as_bytes()));
        }
        let stdin = io::stdin();
        let prompt = stdin.is_terminal();
        let mut input = stdin.lock();
        let mut line = Vec::new();
        loop {
            if prompt {
                // stdout closed (`client | head -1`): stop quietly, rather than return
                // an error the caller would report as the network's.
                let mut out = io::stdout();
                if let Err(err) = write!(out, "> ").and_then(|()| out.flush()) {
                    crate::exit_on_stdout_error(&err);
                }
            }
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.is_empty() {
                return Ok(());
            }
            each(text)?;
        }
    }

    /// `--host` and `--port` resolved to one socket address (the first the
    /// resolver returns), e.g. `localhost` to `127.0.0.1`. This is
    /// `getaddrinfo(3)`, what Python does inside `connect(("localhost", 80))`.
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        let host = self.host.as_str();
        let mut found = (host, self.port)
            .to_socket_addrs()
            .map_err(|err| format!("cannot resolve host '{host}': {err}"))?;
        found
            .next()
            .ok_or_else(|| format!("host '{host}' has no address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Cli {
        Cli::new("demo", "A demo.", 8009)
            .switch("--quiet", "say less")
            .value("--rcvbuf", "BYTES", "receive buffer")
            .positional("MESSAGE", "messages to send")
    }

    #[test]
    fn defaults() {
        let args = cli().try_parse(Vec::<String>::new()).unwrap();
        assert_eq!(args.host, "127.0.0.1");
        assert_eq!(args.port, 8009);
        assert!(!args.flag("--quiet"));
        assert_eq!(args.try_get::<u32>("--rcvbuf"), Ok(None));
        assert!(args.messages.is_empty());
    }

    #[test]
    fn flags_values_and_positionals() {
        let args = cli()
            .try_parse([
                "--host",
                "::1",
                "--port=0",
                "--quiet",
                "hello",
                "--rcvbuf",
                "4096",
                "--",
                "--not-a-flag",
            ])
            .unwrap();
        assert_eq!(args.host, "::1");
        assert_eq!(args.port, 0);
        assert!(args.flag("--quiet"));
        assert_eq!(args.try_get::<u32>("--rcvbuf"), Ok(Some(4096)));
        assert_eq!(args.messages, vec!["hello", "--not-a-flag"]);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            vec!["--nope"],
            vec!["--port"],
            vec!["--port", "70000"],
            vec!["--port", "http"],
            vec!["--quiet=yes"],
        ] {
            match cli().try_parse(bad.clone()) {
                Err(CliError::Usage(text)) => {
                    assert!(text.starts_with("demo: error: "), "{bad:?}: {text}");
                    assert!(text.contains("usage: demo"), "{bad:?}: {text}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn positional_refused_when_not_declared() {
        let server = Cli::new("server", "A server.", 1);
        assert!(matches!(
            server.try_parse(["stray"]),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn bad_value_is_reported_when_read() {
        let args = cli().try_parse(["--rcvbuf", "lots"]).unwrap();
        assert_eq!(
            args.try_get::<u32>("--rcvbuf"),
            Err("invalid value 'lots' for --rcvbuf".to_string())
        );
    }

    #[test]
    fn help_lists_every_flag() {
        match cli().try_parse(["--help"]) {
            Err(CliError::Help(text)) => {
                for needle in [
                    "--host HOST",
                    "--port PORT",
                    "--quiet",
                    "--rcvbuf BYTES",
                    "8009",
                ] {
                    assert!(text.contains(needle), "missing {needle} in {text}");
                }
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_message_takes_the_arguments_in_order() {
        let args = cli().try_parse(["one", "two words"]).unwrap();
        let mut seen = Vec::new();
        args.each_message(|message| {
            seen.push(message.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![b"one".to_vec(), b"two words".to_vec()]);
        let stop = args.each_message(|_| Err(io::Error::other("stop")));
        assert_eq!(stop.unwrap_err().to_string(), "stop");
    }

    #[test]
    fn dash_h_is_help_and_a_client_has_no_port_0() {
        assert!(matches!(cli().try_parse(["-h"]), Err(CliError::Help(_))));
        // After `--`, `-h` is a message like any other.
        let args = cli().try_parse(["--", "-h"]).unwrap();
        assert_eq!(args.messages, vec!["-h"]);
        let client = Cli::new("05_poll_client", "A client.", 8009);
        match client.try_parse(["--help"]) {
            Err(CliError::Help(text)) => {
                assert!(text.contains("the server's port (default 8009)"), "{text}");
                assert!(!text.contains("any free port"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            client.try_parse(["--port", "0"]),
            Err(CliError::Usage(_))
        ));
        let server = Cli::new("05_poll_server", "A server.", 8009);
        assert_eq!(server.try_parse(["--port", "0"]).unwrap().port, 0);
    }

    #[test]
    fn a_lesson_may_choose_another_default_host() {
        let server = Cli::new("15_names_server", "A server.", 10015).default_host("::");
        assert_eq!(server.try_parse(Vec::<String>::new()).unwrap().host, "::");
        assert!(
            server.usage().contains("(default ::)"),
            "{}",
            server.usage()
        );
        let given = server.try_parse(["--host", "127.0.0.1"]).unwrap();
        assert_eq!(given.host, "127.0.0.1");
    }

    #[test]
    fn resolves_host() {
        let args = cli()
            .try_parse(["--host", "127.0.0.1", "--port", "9"])
            .unwrap();
        assert_eq!(args.socket_addr().unwrap(), "127.0.0.1:9".parse().unwrap());
        let bad = cli().try_parse(["--host", "no such host!"]).unwrap();
        assert!(bad.socket_addr().unwrap_err().contains("no such host!"));
    }
}
