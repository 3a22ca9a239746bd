//! Reading socket options with `getsockopt(2)`, for the tables lesson 02 prints.
//!
//! Python shows an option with `sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)`;
//! here each option is read with `nix::sys::socket::getsockopt` and its typed
//! `sockopt::...` name, and shown as text: `on`/`off` for a flag, a number, a name.
//!
//! Also what setting them needs around the lesson's own `setsockopt` calls: the error
//! message with a hint ([`set_failed`]) and a checked interface name ([`InterfaceName`]).

use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::str::FromStr;

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::time::TimeVal;

/// One option the table knows how to read.
pub struct SocketOption {
    /// The C name, as Python's `socket` module also spells it.
    pub name: &'static str,
    /// The level argument of getsockopt: which layer owns the option.
    pub level: &'static str,
    /// Shown in the short table a server prints at start (the rest only by
    /// `--list-options` and when a connection's value differs).
    pub in_short_table: bool,
    read: fn(BorrowedFd) -> nix::Result<String>,
}

/// One line of a table: an option and its value on one socket.
#[derive(Clone, Debug, PartialEq)]
pub struct OptionValue {
    pub name: &'static str,
    pub level: &'static str,
    pub value: String,
}

fn on_off(flag: bool) -> String {
    if flag { "on".into() } else { "off".into() }
}

fn seconds(timeout: TimeVal) -> String {
    if timeout.tv_sec() == 0 && timeout.tv_usec() == 0 {
        "none (block forever)".into()
    } else {
        format!("{}.{:03} s", timeout.tv_sec(), timeout.tv_usec() / 1000)
    }
}

fn text(name: std::ffi::OsString) -> String {
    let name = name.to_string_lossy().into_owned();
    if name.is_empty() {
        "(none)".into()
    } else {
        name
    }
}

fn option(
    name: &'static str,
    level: &'static str,
    in_short_table: bool,
    read: fn(BorrowedFd) -> nix::Result<String>,
) -> SocketOption {
    SocketOption {
        name,
        level,
        in_short_table,
        read,
    }
}

/// Every option this table reads on Linux, in the order it prints them.
pub fn known_options() -> Vec<SocketOption> {
    const SOL: &str = "SOL_SOCKET";
    const TCP: &str = "IPPROTO_TCP";
    const IP: &str = "IPPROTO_IP";
    const IPV6: &str = "IPPROTO_IPV6";
    vec![
        option("SO_TYPE", SOL, true, |fd| {
            getsockopt(&fd, sockopt::SockType).map(|kind| format!("{kind:?}"))
        }),
        option("SO_ACCEPTCONN", SOL, true, |fd| {
            getsockopt(&fd, sockopt::AcceptConn).map(on_off)
        }),
        option("SO_REUSEADDR", SOL, true, |fd| {
            getsockopt(&fd, sockopt::ReuseAddr).map(on_off)
        }),
        option("SO_REUSEPORT", SOL, true, |fd| {
            getsockopt(&fd, sockopt::ReusePort).map(on_off)
        }),
        option("SO_KEEPALIVE", SOL, true, |fd| {
            getsockopt(&fd, sockopt::KeepAlive).map(on_off)
        }),
        option("SO_LINGER", SOL, true, |fd| {
            getsockopt(&fd, sockopt::Linger).map(|linger| {
                if linger.l_onoff == 0 {
                    "off".to_string()
                } else {
                    format!("on, {} s", linger.l_linger)
                }
            })
        }),
        option("SO_RCVBUF", SOL, true, |fd| {
            getsockopt(&fd, sockopt::RcvBuf).map(|bytes| format!("{bytes} bytes"))
        }),
        option("SO_SNDBUF", SOL, true, |fd| {
            getsockopt(&fd, sockopt::SndBuf).map(|bytes| format!("{bytes} bytes"))
        }),
        option("SO_RCVTIMEO", SOL, false, |fd| {
            getsockopt(&fd, sockopt::ReceiveTimeout).map(seconds)
        }),
        option("SO_SNDTIMEO", SOL, false, |fd| {
            getsockopt(&fd, sockopt::SendTimeout).map(seconds)
        }),
        option("SO_BINDTODEVICE", SOL, true, |fd| {
            getsockopt(&fd, sockopt::BindToDevice).map(text)
        }),
        option("SO_BROADCAST", SOL, false, |fd| {
            getsockopt(&fd, sockopt::Broadcast).map(on_off)
        }),
        option("SO_DONTROUTE", SOL, false, |fd| {
            getsockopt(&fd, sockopt::DontRoute).map(on_off)
        }),
        option("SO_OOBINLINE", SOL, false, |fd| {
            getsockopt(&fd, sockopt::OobInline).map(on_off)
        }),
        option("SO_ERROR", SOL, false, |fd| {
            getsockopt(&fd, sockopt::SocketError).map(|errno| errno.to_string())
        }),
        option("SO_PRIORITY", SOL, false, |fd| {
            getsockopt(&fd, sockopt::Priority).map(|n| n.to_string())
        }),
        option("SO_MARK", SOL, false, |fd| {
            getsockopt(&fd, sockopt::Mark).map(|n| n.to_string())
        }),
        option("SO_PASSCRED", SOL, false, |fd| {
            getsockopt(&fd, sockopt::PassCred).map(on_off)
        }),
        option("SO_TIMESTAMP", SOL, false, |fd| {
            getsockopt(&fd, sockopt::ReceiveTimestamp).map(on_off)
        }),
        option("SO_RXQ_OVFL", SOL, false, |fd| {
            getsockopt(&fd, sockopt::RxqOvfl).map(|n| n.to_string())
        }),
        option("TCP_NODELAY", TCP, true, |fd| {
            getsockopt(&fd, sockopt::TcpNoDelay).map(on_off)
        }),
        option("TCP_MAXSEG", TCP, false, |fd| {
            getsockopt(&fd, sockopt::TcpMaxSeg).map(|bytes| format!("{bytes} bytes"))
        }),
        option("TCP_KEEPIDLE", TCP, false, |fd| {
            getsockopt(&fd, sockopt::TcpKeepIdle).map(|s| format!("{s} s"))
        }),
        option("TCP_KEEPINTVL", TCP, false, |fd| {
            getsockopt(&fd, sockopt::TcpKeepInterval).map(|s| format!("{s} s"))
        }),
        option("TCP_KEEPCNT", TCP, false, |fd| {
            getsockopt(&fd, sockopt::TcpKeepCount).map(|n| n.to_string())
        }),
        option("TCP_USER_TIMEOUT", TCP, false, |fd| {
            getsockopt(&fd, sockopt::TcpUserTimeout).map(|ms| format!("{ms} ms"))
        }),
        option("TCP_CONGESTION", TCP, false, |fd| {
            getsockopt(&fd, sockopt::TcpCongestion).map(text)
        }),
        option("TCP_FASTOPEN_CONNECT", TCP, false, |fd| {
            getsockopt(&fd, sockopt::TcpFastOpenConnect).map(on_off)
        }),
        option("IP_TTL", IP, false, |fd| {
            getsockopt(&fd, sockopt::Ipv4Ttl).map(|n| n.to_string())
        }),
        option("IP_TOS", IP, false, |fd| {
            getsockopt(&fd, sockopt::Ipv4Tos).map(|n| format!("{n:#04x}"))
        }),
        option("IP_MULTICAST_TTL", IP, false, |fd| {
            getsockopt(&fd, sockopt::IpMulticastTtl).map(|n| n.to_string())
        }),
        option("IP_MULTICAST_LOOP", IP, false, |fd| {
            getsockopt(&fd, sockopt::IpMulticastLoop).map(on_off)
        }),
        option("IP_FREEBIND", IP, false, |fd| {
            getsockopt(&fd, sockopt::IpFreebind).map(on_off)
        }),
        option("IP_TRANSPARENT", IP, false, |fd| {
            getsockopt(&fd, sockopt::IpTransparent).map(on_off)
        }),
        option("IP_BIND_ADDRESS_NO_PORT", IP, false, |fd| {
            getsockopt(&fd, sockopt::IpBindAddressNoPort).map(on_off)
        }),
        option("IP_PKTINFO", IP, false, |fd| {
            getsockopt(&fd, sockopt::Ipv4PacketInfo).map(on_off)
        }),
        option("IP_RECVERR", IP, false, |fd| {
            getsockopt(&fd, sockopt::Ipv4RecvErr).map(on_off)
        }),
        option("IP_MTU", IP, false, |fd| {
            getsockopt(&fd, sockopt::IpMtu).map(|bytes| format!("{bytes} bytes"))
        }),
        option("IPV6_V6ONLY", IPV6, false, |fd| {
            getsockopt(&fd, sockopt::Ipv6V6Only).map(on_off)
        }),
    ]
}

/// The value of every known option on `socket` (`only_short`: just the short table's).
/// An option this socket does not have (an IP option on a Unix socket, IP_MTU before
/// connect) is shown with the error the kernel gave, e.g. `n/a (ENOTCONN)`.
pub fn read_options<S: AsFd>(socket: &S, only_short: bool) -> Vec<OptionValue> {
    let fd = socket.as_fd();
    known_options()
        .into_iter()
        .filter(|option| option.in_short_table || !only_short)
        .map(|option| OptionValue {
            name: option.name,
            level: option.level,
            value: match (option.read)(fd) {
                Ok(value) => value,
                Err(errno) => format!("n/a ({errno:?})"),
            },
        })
        .collect()
}

/// The options whose value on `socket` differs from `before`, as `(before, now)`.
pub fn differences(before: &[OptionValue], now: &[OptionValue]) -> Vec<(OptionValue, OptionValue)> {
    before
        .iter()
        .zip(now)
        .filter(|(old, new)| old.name == new.name && old.value != new.value)
        .map(|(old, new)| (old.clone(), new.clone()))
        .collect()
}

/// Lines of text in aligned columns; the first row is the header.
pub fn format_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:width$}  ", width = widths[column]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The option table for one socket: `option  level  value`.
pub fn option_table(values: &[OptionValue]) -> String {
    let mut rows = vec![vec!["option".into(), "level".into(), "value".into()]];
    rows.extend(
        values
            .iter()
            .map(|v| vec![v.name.to_string(), v.level.to_string(), v.value.clone()]),
    );
    format_table(&rows)
}

/// The same options on several sockets side by side: `option  level  NAME...`, one
/// value column per `(NAME, values)`. The value lists must come from [`read_options`]
/// with the same `only_short`, so that their rows line up.
pub fn comparison_table(columns: &[(&str, &[OptionValue])]) -> String {
    let mut header = vec!["option".to_string(), "level".to_string()];
    header.extend(columns.iter().map(|(name, _)| name.to_string()));
    let mut rows = vec![header];
    if let Some((_, first)) = columns.first() {
        for (index, option) in first.iter().enumerate() {
            let mut row = vec![option.name.to_string(), option.level.to_string()];
            for (_, values) in columns {
                row.push(match values.get(index) {
                    Some(value) if value.name == option.name => value.value.clone(),
                    _ => "?".to_string(),
                });
            }
            rows.push(row);
        }
    }
    format_table(&rows)
}

/// The table of [`differences`]: `option  level  BEFORE  NOW`, each line indented
/// by `indent`; empty when nothing differs.
pub fn differences_table(
    changed: &[(OptionValue, OptionValue)],
    before: &str,
    now: &str,
    indent: &str,
) -> String {
    if changed.is_empty() {
        return String::new();
    }
    let mut rows = vec![vec![
        "option".to_string(),
        "level".to_string(),
        before.to_string(),
        now.to_string(),
    ]];
    rows.extend(changed.iter().map(|(old, new)| {
        vec![
            old.name.to_string(),
            old.level.to_string(),
            old.value.clone(),
            new.value.clone(),
        ]
    }));
    format_table(&rows)
        .lines()
        .map(|line| format!("{indent}{line}\n"))
        .collect()
}

/// The message for a failed `setsockopt(2)` of `option` to `value`, with a hint for
/// the causes a learner meets: a capability the process lacks (`EPERM`), an interface
/// that does not exist (`ENODEV`).
pub fn set_failed(option: &str, value: &str, err: &io::Error) -> String {
    let errno = err.raw_os_error().map(Errno::from_raw);
    let hint = match (option, errno) {
        ("SO_BINDTODEVICE", Some(Errno::EPERM)) => {
            "; binding a socket to a device needs the CAP_NET_RAW capability \
             (run as root, or grant it with `sudo setcap cap_net_raw+ep` on the program); \
             Linux 5.7 and later allow it without privileges unless the socket is \
             already bound to a device"
        }
        (_, Some(Errno::EPERM)) => "; the process lacks the privilege this option needs",
        (_, Some(Errno::ENODEV)) => {
            "; there is no network interface by that name: `ip link` lists them"
        }
        _ => "",
    };
    format!("cannot set {option} to {value}: {err}{hint}")
}

/// A network interface name as `SO_BINDTODEVICE` takes it, e.g. `lo` or `eth0`.
///
/// Linux names have 1 to 15 bytes (`IFNAMSIZ` is 16 with the final NUL), without
/// `/`, `:`, whitespace or NUL. The kernel silently cuts a longer name to 15 bytes, which
/// could name another interface; checking first turns that into a usage error.
#[derive(Clone, Debug, PartialEq)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// The longest name Linux accepts.
    pub const MAX_LEN: usize = 15;

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InterfaceName {
    type Err = String;

    fn from_str(name: &str) -> Result<InterfaceName, String> {
        if name.is_empty() || name.len() > InterfaceName::MAX_LEN {
            return Err(format!(
                "an interface name has 1 to {} bytes",
                InterfaceName::MAX_LEN
            ));
        }
        if name == "." || name == ".." {
            return Err(format!("{name:?} is not an interface name"));
        }
        if name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
        {
            return Err("an interface name has no '/', ':', spaces or NUL".into());
        }
        Ok(InterfaceName(name.to_string()))
    }
}

impl std::fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};

    fn value<'a>(values: &'a [OptionValue], name: &str) -> &'a str {
        &values.iter().find(|v| v.name == name).unwrap().value
    }

    #[test]
    fn reads_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let values = read_options(&listener, false);
        assert_eq!(values.len(), known_options().len());
        assert_eq!(value(&values, "SO_TYPE"), "Stream");
        assert_eq!(value(&values, "SO_ACCEPTCONN"), "on");
        // std sets SO_REUSEADDR on Unix before bind, as the lessons do.
        assert_eq!(value(&values, "SO_REUSEADDR"), "on");
        assert_eq!(value(&values, "SO_LINGER"), "off");
        assert!(value(&values, "SO_RCVBUF").ends_with(" bytes"));
        assert!(value(&values, "IPV6_V6ONLY").starts_with("n/a ("));
        let short = read_options(&listener, true);
        assert!(short.len() < values.len());
        assert!(short.iter().any(|v| v.name == "TCP_NODELAY"));
    }

    #[test]
    fn udp_has_no_tcp_options() {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let values = read_options(&udp, false);
        assert_eq!(value(&values, "SO_TYPE"), "Datagram");
        assert!(value(&values, "TCP_NODELAY").starts_with("n/a ("));
    }

    #[test]
    fn differences_and_tables() {
        let a = OptionValue {
            name: "X",
            level: "L",
            value: "on".into(),
        };
        let b = OptionValue {
            name: "Y",
            level: "L",
            value: "1".into(),
        };
        let changed = OptionValue {
            value: "off".into(),
            ..a.clone()
        };
        let diff = differences(&[a.clone(), b.clone()], &[changed.clone(), b]);
        assert_eq!(diff, vec![(a, changed)]);

        let table = format_table(&[
            vec!["a".into(), "bb".into()],
            vec!["ccc".into(), "d".into()],
        ]);
        assert_eq!(table, "a    bb\nccc  d\n");
    }

    #[test]
    fn side_by_side_on_tcp_and_udp() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp_values = read_options(&tcp, false);
        let udp_values = read_options(&udp, false);
        let table = comparison_table(&[("tcp", &tcp_values), ("udp", &udp_values)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), known_options().len() + 1);
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(header, ["option", "level", "tcp", "udp"]);
        let nodelay = lines
            .iter()
            .find(|l| l.starts_with("TCP_NODELAY "))
            .unwrap();
        let cells: Vec<&str> = nodelay.split("  ").filter(|c| !c.is_empty()).collect();
        assert_eq!(cells[2].trim(), "off", "{nodelay}");
        assert!(cells[3].trim().starts_with("n/a ("), "{nodelay}");
        // Lists that do not line up show `?` rather than another option's value.
        let short = read_options(&udp, true);
        let mixed = comparison_table(&[("all", &tcp_values), ("short", &short)]);
        assert!(mixed.lines().any(|l| l.ends_with('?')), "{mixed}");
        assert_eq!(comparison_table(&[]), "option  level\n");
    }

    #[test]
    fn differences_as_an_indented_table() {
        let before = OptionValue {
            name: "SO_ACCEPTCONN",
            level: "SOL_SOCKET",
            value: "on".into(),
        };
        let now = OptionValue {
            value: "off".into(),
            ..before.clone()
        };
        assert_eq!(differences_table(&[], "a", "b", "  "), "");
        let table = differences_table(&[(before, now)], "listening", "connection", "  ");
        assert_eq!(
            table,
            "  option         level       listening  connection\n  \
             SO_ACCEPTCONN  SOL_SOCKET  on         off\n"
        );
    }

    #[test]
    fn set_failed_hints() {
        let eperm = io::Error::from_raw_os_error(Errno::EPERM as i32);
        let text = set_failed("SO_BINDTODEVICE", "eth0", &eperm);
        assert!(
            text.starts_with("cannot set SO_BINDTODEVICE to eth0: "),
            "{text}"
        );
        assert!(text.contains("CAP_NET_RAW"), "{text}");
        let enodev = io::Error::from_raw_os_error(Errno::ENODEV as i32);
        let text = set_failed("SO_BINDTODEVICE", "nosuchif0", &enodev);
        assert!(text.contains("ip link"), "{text}");
        let einval = io::Error::from_raw_os_error(Errno::EINVAL as i32);
        assert!(!set_failed("SO_RCVBUF", "1", &einval).contains("; "));
    }

    #[test]
    fn interface_names() {
        assert_eq!("lo".parse::<InterfaceName>().unwrap().as_str(), "lo");
        assert_eq!("eth0".parse::<InterfaceName>().unwrap().as_bytes(), b"eth0");
        assert!("a".repeat(15).parse::<InterfaceName>().is_ok());
        for bad in [
            "",
            "sixteen-bytes-xx",
            "a/b",
            "a b",
            "a:1",
            ".",
            "..",
            "a\0",
        ] {
            assert!(bad.parse::<InterfaceName>().is_err(), "{bad:?}");
        }
    }
}
