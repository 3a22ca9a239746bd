//! Lesson 15, the client: a tool for names, addresses and byte order, and a client
//! that connects the way a real one must (every address getaddrinfo gives, in order).
//!
//!   cargo run --bin 15_names_client -- lookup localhost http
//!   cargo run --bin 15_names_client -- reverse 127.0.0.1 80
//!   cargo run --bin 15_names_client -- service http tcp
//!   cargo run --bin 15_names_client -- protocol tcp
//!   cargo run --bin 15_names_client -- host
//!   cargo run --bin 15_names_client -- pton inet6 2001:db8::1
//!   cargo run --bin 15_names_client -- ntop inet6 20010db8000000000000000000000001
//!   cargo run --bin 15_names_client -- order 1780000000
//!   cargo run --bin 15_names_client -- connect localhost 10015 hello
//!
//! std has inet_pton/inet_ntop (parsing and printing `Ipv4Addr`/`Ipv6Addr`), the
//! byte orders (`to_be_bytes`) and a plain getaddrinfo (`ToSocketAddrs`); nix has
//! uname, where Linux keeps the host name. The rest of the C library's name
//! functions are wrapped in resolver.rs.

// ANCHOR: modules
/// getaddrinfo with flags, getnameinfo, getservbyname, getprotobyname: safe wrappers.
mod resolver;
// ANCHOR_END: modules

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use nix::libc;
use resolver::{AddrInfo, Hints};
use workbook::cli::{Args, Cli};
use workbook::{exit_on_stdout_error, exit_with_error, print_line, show};

const DEFAULT_PORT: u16 = 10015;
const SERVER_BIN: &str = "15_names_server";
/// The longest the greeting line may be.
const GREETING_LIMIT: usize = 1024;
/// The longest line of stdin `connect` sends (it holds the line and its echo).
const LINE_LIMIT: usize = 32 * 1024 * 1024;

const COMMANDS: &str = "one of
  lookup HOST [SERVICE]        getaddrinfo: every result, as Python prints its tuples
  reverse ADDRESS [PORT]       getnameinfo: the host and service names of an address
  service NAME|PORT [tcp|udp]  getservbyname / getservbyport (/etc/services)
  protocol NAME|NUMBER         getprotobyname / getprotobynumber (/etc/protocols)
  host                         gethostname, and the canonical name getaddrinfo gives it
  pton inet|inet6 TEXT         inet_pton: an address as text to its bytes
  ntop inet|inet6 HEX          inet_ntop: bytes (in hex) to the address as text
  order NUMBER                 the bytes of htons/htonl on this machine
  connect [HOST [PORT] [MESSAGE...]]
                               try every getaddrinfo result in order; print the
                               server's greeting; send each MESSAGE (or each line of
                               stdin) and print the echo (HOST and PORT: by default
                               --host and --port)
An empty HOST (\"\") is getaddrinfo's NULL: this machine's loopback addresses.";

fn main() {
    let args = Cli::new(
        "15_names_client",
        "Lesson 15: names, addresses and byte order, and a client that tries every \
         address of a name (against 15_names_server).",
        DEFAULT_PORT,
    )
    .value(
        "--family",
        "F",
        "lookup, connect: only addresses of family F: inet (4) or inet6 (6)",
    )
    .value(
        "--type",
        "T",
        "lookup: only sockets of type T: stream, dgram or raw; reverse: dgram looks \
         the port up as UDP",
    )
    .switch(
        "--canonname",
        "lookup: ask for the canonical name (AI_CANONNAME)",
    )
    .switch(
        "--numeric",
        "lookup: HOST must be an address (AI_NUMERICHOST: no resolver at all); \
         reverse: numbers only (NI_NUMERICHOST | NI_NUMERICSERV)",
    )
    .switch(
        "--passive",
        "lookup: addresses to bind, not to connect to (AI_PASSIVE; with HOST \"\", the wildcards)",
    )
    .value(
        "--timeout",
        "SECS",
        "connect: how long one connection attempt and each read may take (default 5)",
    )
    .positional("COMMAND", COMMANDS)
    .parse();
    let words: Vec<&str> = args.messages.iter().map(String::as_str).collect();
    let Some((&command, rest)) = words.split_first() else {
        args.usage_error("a COMMAND is needed: lookup, reverse, service, protocol, host, pton, ntop, order or connect")
    };
    let status = match command {
        "lookup" => lookup(&args, rest),
        "reverse" => reverse(&args, rest),
        "service" => service(&args, rest),
        "protocol" => protocol(&args, rest),
        "host" => host(&args, rest),
        "pton" => pton(&args, rest),
        "ntop" => ntop(&args, rest),
        "order" => order(&args, rest),
        "connect" => connect(&args, rest),
        other => args.usage_error(&format!("unknown command '{other}'")),
    };
    std::process::exit(status);
}

/// Between `min` and `max` words after the command, or a usage error.
fn expect_words(args: &Args, rest: &[&str], min: usize, max: usize, form: &str) {
    if rest.len() < min || rest.len() > max {
        args.usage_error(&format!("usage: {form}"));
    }
}

/// Python's spelling of a string: `'localhost'`.
fn py_str(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// An empty HOST is C's NULL (Python's None).
fn host_arg(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn family_name(family: i32) -> String {
    match family {
        libc::AF_INET => "AF_INET".into(),
        libc::AF_INET6 => "AF_INET6".into(),
        libc::AF_UNSPEC => "AF_UNSPEC".into(),
        other => format!("family {other}"),
    }
}

fn socktype_name(socktype: i32) -> String {
    match socktype {
        libc::SOCK_STREAM => "SOCK_STREAM".into(),
        libc::SOCK_DGRAM => "SOCK_DGRAM".into(),
        libc::SOCK_RAW => "SOCK_RAW".into(),
        other => format!("type {other}"),
    }
}

/// `--family`: inet (4) or inet6 (6); AF_UNSPEC (0) if not given.
fn family_flag(args: &Args) -> i32 {
    match args.get::<String>("--family").as_deref() {
        None | Some("unspec") => libc::AF_UNSPEC,
        Some("inet" | "4" | "AF_INET") => libc::AF_INET,
        Some("inet6" | "6" | "AF_INET6") => libc::AF_INET6,
        Some(other) => args.usage_error(&format!("--family {other}: use inet (4) or inet6 (6)")),
    }
}

/// A family word of pton/ntop.
fn family_word(args: &Args, word: &str) -> i32 {
    match word {
        "inet" | "4" | "AF_INET" => libc::AF_INET,
        "inet6" | "6" | "AF_INET6" => libc::AF_INET6,
        other => args.usage_error(&format!("unknown family '{other}': use inet or inet6")),
    }
}

fn type_flag(args: &Args) -> i32 {
    match args.get::<String>("--type").as_deref() {
        None => 0,
        Some("stream" | "SOCK_STREAM") => libc::SOCK_STREAM,
        Some("dgram" | "SOCK_DGRAM") => libc::SOCK_DGRAM,
        Some("raw" | "SOCK_RAW") => libc::SOCK_RAW,
        Some(other) => args.usage_error(&format!("--type {other}: use stream, dgram or raw")),
    }
}

/// Python's sockaddr tuple: `('127.0.0.1', 80)` or `('::1', 80, 0, 0)`.
fn py_sockaddr(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => format!("({}, {})", py_str(&v4.ip().to_string()), v4.port()),
        SocketAddr::V6(v6) => format!(
            "({}, {}, {}, {})",
            py_str(&v6.ip().to_string()),
            v6.port(),
            v6.flowinfo(),
            v6.scope_id()
        ),
    }
}

/// One getaddrinfo result as Python prints its tuple's parts:
/// `AF_INET SOCK_STREAM 6 '' ('127.0.0.1', 80)`.
fn py_addrinfo(info: &AddrInfo) -> String {
    format!(
        "{} {} {} {} {}",
        family_name(info.family),
        socktype_name(info.socktype),
        info.protocol,
        py_str(info.canonname.as_deref().unwrap_or("")),
        py_sockaddr(info.addr)
    )
}

/// The call as a reader would write it in Python: `getaddrinfo('localhost', 'http')`.
fn py_call(host: Option<&str>, service: Option<&str>, hints: &Hints) -> String {
    let arg = |text: Option<&str>| text.map_or("None".to_string(), py_str);
    let mut call = format!("getaddrinfo({}, {}", arg(host), arg(service));
    if hints.family != 0 {
        call.push_str(&format!(", family={}", family_name(hints.family)));
    }
    if hints.socktype != 0 {
        call.push_str(&format!(", type={}", socktype_name(hints.socktype)));
    }
    let names = [
        (libc::AI_PASSIVE, "AI_PASSIVE"),
        (libc::AI_CANONNAME, "AI_CANONNAME"),
        (libc::AI_NUMERICHOST, "AI_NUMERICHOST"),
    ];
    let flags: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| hints.flags & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if !flags.is_empty() {
        call.push_str(&format!(", flags={}", flags.join("|")));
    }
    call.push(')');
    call
}

// ANCHOR: lookup
/// `lookup HOST [SERVICE]`: every result of getaddrinfo, in its order.
fn lookup(args: &Args, rest: &[&str]) -> i32 {
    expect_words(args, rest, 1, 2, "lookup HOST [SERVICE]");
    let host = host_arg(rest[0]);
    let service = rest.get(1).copied();
    let mut flags = 0;
    if args.flag("--canonname") {
        flags |= libc::AI_CANONNAME;
    }
    if args.flag("--numeric") {
        flags |= libc::AI_NUMERICHOST;
    }
    if args.flag("--passive") {
        flags |= libc::AI_PASSIVE;
    }
    let hints = Hints {
        family: family_flag(args),
        socktype: type_flag(args),
        flags,
    };
    let call = py_call(host, service, &hints);
    match resolver::getaddrinfo(host, service, hints) {
        Ok(found) => {
            print_line(&format!("{call}: {}", show::count(found.len(), "result")));
            for info in &found {
                print_line(&format!("  {}", py_addrinfo(info)));
            }
            0
        }
        Err(err) => exit_with_error(&format!("{call}: {err}")),
    }
}
// ANCHOR_END: lookup

/// `reverse ADDRESS [PORT]`: getnameinfo.
fn reverse(args: &Args, rest: &[&str]) -> i32 {
    expect_words(args, rest, 1, 2, "reverse ADDRESS [PORT]");
    let port: u16 = match rest.get(1) {
        None => 0,
        Some(text) => text
            .parse()
            .unwrap_or_else(|_| args.usage_error(&format!("PORT '{text}': 0 to 65535"))),
    };
    let addr = address_with_zone(rest[0], port).unwrap_or_else(|why| exit_with_error(&why));
    let mut flags = 0;
    if args.flag("--numeric") {
        flags |= libc::NI_NUMERICHOST | libc::NI_NUMERICSERV;
    }
    if type_flag(args) == libc::SOCK_DGRAM {
        flags |= libc::NI_DGRAM;
    }
    let call = format!("getnameinfo({}, {flags})", py_sockaddr(addr));
    match resolver::getnameinfo(addr, flags) {
        Ok((host, service)) => {
            print_line(&format!(
                "{call} = ({}, {})",
                py_str(&host),
                py_str(&service)
            ));
            0
        }
        Err(err) => exit_with_error(&format!("{call}: {err}")),
    }
}

/// Digits only: a number, maybe too large for what it stands for.
fn is_number(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit())
}

/// An address and a port as a socket address. An IPv6 address may carry a zone,
/// `fe80::1%eth0` (the interface a link-local address belongs to): it becomes the
/// sockaddr's scope id, the interface's number (if_nametoindex(3)).
fn address_with_zone(text: &str, port: u16) -> Result<SocketAddr, String> {
    let not_an_address =
        || format!("'{text}' is not an IP address (reverse takes an address; lookup takes a name)");
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let (ip, zone) = text.split_once('%').ok_or_else(not_an_address)?;
    let ip: Ipv6Addr = ip.parse().map_err(|_| not_an_address())?;
    let scope_id = match zone.parse::<u32>() {
        Ok(number) => number,
        Err(_) => nix::net::if_::if_nametoindex(zone)
            .map_err(|err| format!("'{text}': no interface '{zone}' here ({err})"))?,
    };
    Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
        ip, port, 0, scope_id,
    )))
}

/// `service NAME|PORT [tcp|udp]`: a line of /etc/services.
fn service(args: &Args, rest: &[&str]) -> i32 {
    expect_words(args, rest, 1, 2, "service NAME|PORT [tcp|udp]");
    let protocol = rest.get(1).copied();
    let by_port = rest[0].parse::<u16>().is_ok();
    if !by_port && is_number(rest[0]) {
        exit_with_error(&format!(
            "{} is not a port (0 to 65535: 16 bits), so there is nothing to look up",
            rest[0]
        ));
    }
    let call = format!(
        "{}({}{})",
        if by_port {
            "getservbyport"
        } else {
            "getservbyname"
        },
        if by_port {
            rest[0].to_string()
        } else {
            py_str(rest[0])
        },
        protocol.map_or(String::new(), |p| format!(", {}", py_str(p)))
    );
    let Some(found) = resolver::service(rest[0], protocol) else {
        exit_with_error(&format!(
            "{call}: service/proto not found (no such line in /etc/services)"
        ));
    };
    let value = if by_port {
        py_str(&found.name)
    } else {
        found.port.to_string()
    };
    let aliases = match found.aliases.as_slice() {
        [] => String::new(),
        aliases => format!(", aliases {}", aliases.join(" ")),
    };
    print_line(&format!(
        "{call} = {value}   ({} {}/{}{aliases})",
        found.name, found.port, found.protocol
    ));
    0
}

/// `protocol NAME|NUMBER`: a line of /etc/protocols.
fn protocol(args: &Args, rest: &[&str]) -> i32 {
    expect_words(args, rest, 1, 1, "protocol NAME|NUMBER");
    let by_number = rest[0].parse::<u8>().is_ok();
    if !by_number && is_number(rest[0]) {
        exit_with_error(&format!(
            "{} is not a protocol number (0 to 255: one byte of the IP header), so there \
             is nothing to look up",
            rest[0]
        ));
    }
    let call = if by_number {
        format!("getprotobynumber({})", rest[0])
    } else {
        format!("getprotobyname({})", py_str(rest[0]))
    };
    let Some(found) = resolver::protocol(rest[0]) else {
        exit_with_error(&format!(
            "{call}: protocol not found (no such line in /etc/protocols)"
        ));
    };
    let value = if by_number {
        py_str(&found.name)
    } else {
        found.number.to_string()
    };
    let aliases = match found.aliases.as_slice() {
        [] => String::new(),
        aliases => format!(", aliases {}", aliases.join(" ")),
    };
    print_line(&format!(
        "{call} = {value}   ({} {}{aliases})",
        found.name, found.number
    ));
    0
}

/// `host`: this machine's name, and what the resolver makes of it.
fn host(args: &Args, rest: &[&str]) -> i32 {
    expect_words(args, rest, 0, 0, "host");
    // gethostname(2) is uname(2)'s nodename on Linux (nix's `gethostname` needs a
    // crate feature this workbook does not turn on; `uname` is there).
    let name = match nix::sys::utsname::uname() {
        Ok(uts) => uts.nodename().to_string_lossy().into_owned(),
        Err(err) => exit_with_error(&format!("gethostname: {err}")),
    };
    print_line(&format!("gethostname() = {}", py_str(&name)));
    // The fully qualified name: the canonical name getaddrinfo finds for it.
    let hints = Hints {
        socktype: libc::SOCK_STREAM,
        flags: libc::AI_CANONNAME,
        ..Hints::default()
    };
    let call = py_call(Some(&name), None, &hints);
    match resolver::getaddrinfo(Some(&name), None, hints) {
        Ok(found) => {
            let canonical = found.first().and_then(|info| info.canonname.clone());
            let addresses: Vec<String> = found.iter().map(|i| i.addr.ip().to_string()).collect();
            print_line(&format!(
                "{call}: canonical name {}, addresses {}",
                py_str(canonical.as_deref().unwrap_or("")),
                addresses.join(" ")
            ));
        }
        Err(err) => print_line(&format!("{call}: {err}")),
    }
    0
}

// ANCHOR: pton
/// `pton FAMILY TEXT`: inet_pton, which std calls parsing: `"::1".parse::<Ipv6Addr>()`.
fn pton(args: &Args, rest: &[&str]) -> i32 {
    expect_words(args, rest, 2, 2, "pton inet|inet6 TEXT");
    let family = family_word(args, rest[0]);
    let text = rest[1];
    let call = format!("inet_pton({}, {})", family_name(family), py_str(text));
    let bytes: Vec<u8> = if family == libc::AF_INET {
        match text.parse::<Ipv4Addr>() {
            Ok(ip) => ip.octets().to_vec(),
            Err(_) => exit_with_error(&format!(
                "{call}: not an IPv4 address: {}",
                why_not_ipv4(text)
            )),
        }
    } else {
        match text.parse::<Ipv6Addr>() {
            Ok(ip) => ip.octets().to_vec(),
            Err(_) => exit_with_error(&format!(
                "{call}: not an IPv6 address: {}",
                why_not_ipv6(text)
            )),
        }
    };
    print_line(&format!(
        "{call} = {} ({} bytes, network order)",
        hex(&bytes),
        bytes.len()
    ));
    0
}
// ANCHOR_END: pton

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why `text` is no dotted-quad IPv4 address, in words.
fn why_not_ipv4(text: &str) -> String {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 4 {
        return format!(
            "an IPv4 address is 4 decimal numbers separated by dots, this has {} \
             (inet_pton takes no short forms like 127.1; the old inet_aton does)",
            parts.len()
        );
    }
    for part in parts {
        if part.is_empty() {
            return "one of the 4 numbers is missing".into();
        }
        if let Some(bad) = part.chars().find(|c| !c.is_ascii_digit()) {
            return format!("{bad:?} in '{part}' is not a decimal digit");
        }
        if part.len() > 1 && part.starts_with('0') {
            return format!("'{part}' has a leading zero (refused: old parsers read it as octal)");
        }
        if part.parse::<u32>().is_ok_and(|n| n > 255) || part.len() > 3 {
            return format!("{part} is more than 255 (each number is one byte)");
        }
    }
    "not valid IPv4 syntax".into()
}

/// Why `text` is no IPv6 address, in words.
fn why_not_ipv6(text: &str) -> String {
    if let Some((_, zone)) = text.split_once('%') {
        return format!(
            "'%{zone}' is a zone (a scope id), not part of the address: inet_pton takes \
             none, getaddrinfo does"
        );
    }
    if text.matches("::").count() > 1 {
        return "\"::\" may appear only once: with two, nobody could tell how many zero \
                groups each one stands for"
            .into();
    }
    let (head, last) = match text.rsplit_once(':') {
        Some(split) => split,
        None => {
            return "an IPv6 address has colons: 8 groups of hex digits, or :: for zeros".into();
        }
    };
    let mut groups: Vec<&str> = head.split(':').collect();
    let mut count = 0;
    // A dotted quad may end it (::ffff:1.2.3.4): it counts as two groups.
    if last.contains('.') {
        if last.parse::<Ipv4Addr>().is_err() {
            return format!("its IPv4 part '{last}': {}", why_not_ipv4(last));
        }
        count += 2;
    } else {
        groups.push(last);
    }
    for group in groups.iter().filter(|g| !g.is_empty()) {
        if let Some(bad) = group.chars().find(|c| !c.is_ascii_hexdigit()) {
            return format!("{bad:?} in '{group}' is not a hex digit");
        }
        if group.len() > 4 {
            return format!("'{group}' has more than 4 hex digits (a group is 16 bits)");
        }
        count += 1;
    }
    let compressed = text.contains("::");
    if count > 8 {
        return format!("{count} groups of 16 bits: an IPv6 address has 8 (128 bits)");
    }
    if compressed && count == 8 {
        return "8 groups of 16 bits fill all 128 bits, so there is no zero group left for \
                \"::\" to stand for (it stands for one or more)"
            .into();
    }
    if !compressed && count < 8 {
        return format!("{count} groups of 16 bits: 8 are needed, or :: for the missing zeros");
    }
    "not valid IPv6 syntax (a lone ':' at one end?)".into()
}

// ANCHOR: ntop
/// `ntop FAMILY HEX`: inet_ntop, which std calls Display: `Ipv6Addr::from(bytes)`.
fn ntop(args: &Args, rest: &[&str]) -> i32 {
    expect_words(args, rest, 2, 2, "ntop inet|inet6 HEX");
    let family = family_word(args, rest[0]);
    let call = format!("inet_ntop({}, {})", family_name(family), rest[1]);
    let bytes = parse_hex(rest[1]).unwrap_or_else(|why| exit_with_error(&format!("{call}: {why}")));
    let text = match (family, bytes.len()) {
        (libc::AF_INET, 4) => Ipv4Addr::from([bytes[0], bytes[1], bytes[2], bytes[3]]).to_string(),
        (libc::AF_INET6, 16) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&bytes);
            Ipv6Addr::from(octets).to_string()
        }
        (_, n) => exit_with_error(&format!(
            "{call}: {} takes {} bytes, this is {n}",
            family_name(family),
            if family == libc::AF_INET { 4 } else { 16 }
        )),
    };
    print_line(&format!("{call} = {}", py_str(&text)));
    // The one place where std and the C library write the same bytes differently.
    if family == libc::AF_INET6 && bytes[..12].iter().all(|b| *b == 0) && bytes[12..14] != [0, 0] {
        print_line(&format!(
            "note: the C library's inet_ntop writes this one ::{}.{}.{}.{} (the old \
             \"IPv4-compatible\" form, deprecated by RFC 4291); std writes hex",
            bytes[12], bytes[13], bytes[14], bytes[15]
        ));
    }
    0
}
// ANCHOR_END: ntop

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<char> = text.chars().filter(|c| *c != ':' && *c != ' ').collect();
    if let Some(bad) = digits.iter().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "{bad:?} is not a hex digit (give the bytes in hex, e.g. 7f000001)"
        ));
    }
    if digits.len() % 2 != 0 {
        return Err("an odd number of hex digits: two per byte".into());
    }
    Ok(digits
        .chunks(2)
        .map(|pair| {
            let high = pair[0].to_digit(16).unwrap_or(0);
            let low = pair[1].to_digit(16).unwrap_or(0);
            (high * 16 + low) as u8
        })
        .collect())
}

// ANCHOR: order
/// `order NUMBER`: the bytes of a number in this machine's order and in network order
/// (big-endian), and what htons/htonl return: those network bytes read as a host
/// integer. On a big-endian machine they are the same and htonl does nothing.
fn order(args: &Args, rest: &[&str]) -> i32 {
    expect_words(args, rest, 1, 1, "order NUMBER");
    let Ok(number) = rest[0].parse::<u32>() else {
        exit_with_error(&format!(
            "'{}' is not a number from 0 to 4294967295 (32 bits: what htonl takes)",
            rest[0]
        ));
    };
    let spaced = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let machine = if cfg!(target_endian = "little") {
        "little-endian"
    } else {
        "big-endian"
    };
    print_line(&format!(
        "{number} = 0x{number:08x}; this machine is {machine}"
    ));
    print_line(&format!(
        "  u32 in memory here (to_ne_bytes):       {}",
        spaced(&number.to_ne_bytes())
    ));
    print_line(&format!(
        "  u32 in network order (to_be_bytes):     {}   <- what goes on the wire",
        spaced(&number.to_be_bytes())
    ));
    print_line(&format!("  htonl({number}) = {}", number.to_be()));
    if let Ok(short) = u16::try_from(number) {
        print_line(&format!(
            "  u16 in memory here (to_ne_bytes):       {}",
            spaced(&short.to_ne_bytes())
        ));
        print_line(&format!(
            "  u16 in network order (to_be_bytes):     {}",
            spaced(&short.to_be_bytes())
        ));
        print_line(&format!("  htons({number}) = {}", short.to_be()));
    }
    0
}
// ANCHOR_END: order

// ANCHOR: connect
/// `connect [HOST [PORT] [MESSAGE...]]`: getaddrinfo, then connect(2) to each address
/// in turn until one answers, as every real client must: a name may have an IPv6 and
/// an IPv4 address, and a server may listen on only one of them.
fn connect(args: &Args, rest: &[&str]) -> i32 {
    // No HOST: --host (127.0.0.1 unless given).
    let host = host_arg(rest.first().copied().unwrap_or(&args.host));
    // The second word is the port if it is a number; otherwise --port, and the words
    // from there on are messages. A number that is no port is a mistake, not a message.
    let (port, messages) = match rest.get(1) {
        Some(word) if is_number(word) => match word.parse::<u16>() {
            Ok(port) if port > 0 => (port, &rest[2..]),
            _ => args.usage_error(&format!("PORT '{word}': a port is 1 to 65535")),
        },
        _ => (args.port, rest.get(1..).unwrap_or_default()),
    };
    let timeout: f64 = args.get_or("--timeout", 5.0);
    if !(0.01..=3600.0).contains(&timeout) {
        args.usage_error("--timeout must be between 0.01 and 3600 seconds");
    }
    let timeout = Duration::from_secs_f64(timeout);
    let hints = Hints {
        family: family_flag(args),
        socktype: libc::SOCK_STREAM,
        flags: 0,
    };
    let service = port.to_string();
    let call = py_call(host, Some(&service), &hints);
    let found = match resolver::getaddrinfo(host, Some(&service), hints) {
        Ok(found) => found,
        Err(err) => exit_with_error(&format!("{call}: {err}")),
    };
    let count = match found.len() {
        1 => "1 address".to_string(),
        n => format!("{n} addresses"),
    };
    print_line(&format!("{call}: {count}, tried in this order"));
    let mut failures = Vec::new();
    let mut connected = None;
    for info in &found {
        match TcpStream::connect_timeout(&info.addr, timeout) {
            Ok(stream) => {
                let local = stream
                    .local_addr()
                    .map_or("?".to_string(), |a| a.to_string());
                print_line(&format!("  {}: connected, from {local}", info.addr));
                connected = Some(stream);
                break;
            }
            Err(err) => {
                print_line(&format!("  {}: {err}", info.addr));
                failures.push(format!("{}: {err}", info.addr));
            }
        }
    }
    let Some(stream) = connected else {
        // Addresses of one family only: a server may well run, on the other one.
        let other = if found.iter().all(|info| info.addr.is_ipv6()) {
            " only IPv6 addresses were tried: a server on IPv4 only (--host 127.0.0.1) \
             does not answer them;"
        } else if found.iter().all(|info| info.addr.is_ipv4()) {
            " only IPv4 addresses were tried: a server on IPv6 only (--v6only) does not \
             answer them;"
        } else {
            ""
        };
        exit_with_error(&format!(
            "cannot connect to {} port {port}: every address failed ({});{other} is the \
             server running? start it with: cargo run --bin {SERVER_BIN}",
            host.unwrap_or("\"\""),
            failures.join(", ")
        ));
    };
    converse(stream, messages, timeout)
}
// ANCHOR_END: connect

/// The greeting line, then each message and its echo, then a polite close.
fn converse(stream: TcpStream, messages: &[&str], timeout: Duration) -> i32 {
    let timeouts = stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)));
    if let Err(err) = timeouts {
        exit_with_error(&format!("cannot set the socket's timeouts: {err}"));
    }
    let waited = show_seconds(timeout);
    match read_line(&stream) {
        Ok(greeting) => print_line(&format!("server: {}", as_text(&greeting))),
        Err(err) => exit_with_error(&format!(
            "no greeting line from the server: {} (is it lesson 15's server?)",
            says(&err, &waited)
        )),
    }
    let mut each = |message: &[u8]| exchange(&stream, message, &waited);
    let talked = if messages.is_empty() {
        each_stdin_line(&mut each)
    } else {
        messages.iter().try_for_each(|m| each(m.as_bytes()))
    };
    match talked.and_then(|()| close_cleanly(&stream, &waited)) {
        Ok(()) => 0,
        Err(why) => exit_with_error(&why),
    }
}

/// `0.2 s (--timeout)`: how long a read or a send may wait, for the error lines.
fn show_seconds(timeout: Duration) -> String {
    format!("{} s (--timeout)", timeout.as_secs_f64())
}

/// A read or send that waited out SO_RCVTIMEO/SO_SNDTIMEO fails with EAGAIN
/// ("Resource temporarily unavailable"), which says nothing of the wait: the error
/// lines say it instead.
fn timed_out(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// An I/O error in words, a timeout as the wait it was.
fn says(err: &io::Error, waited: &str) -> String {
    if timed_out(err) {
        format!("nothing came within {waited}")
    } else {
        err.to_string()
    }
}

// ANCHOR: exchange
/// Sends one message and reads its echo at the same time: the sending runs on a
/// thread of its own. A client that sent the whole message before reading a byte
/// (Unix Network Programming calls it the batch-input deadlock) hangs on a message
/// longer than the socket buffers hold: once they are full of echo, the server stops
/// reading, our send stops, and each end waits for the other. src/echo_client.rs
/// does the same for lesson 04's many connections.
fn exchange(stream: &TcpStream, message: &[u8], waited: &str) -> Result<(), String> {
    let mut echo = vec![0u8; message.len()];
    let (sent, received) = thread::scope(|scope| {
        let sender = scope.spawn(|| (&*stream).write_all(message));
        let received = receive_echo(stream, &mut echo);
        if received.is_err() {
            // The sender may be stuck in a send nobody will make room for now:
            // shutting down our side makes it fail at once.
            let _ = stream.shutdown(Shutdown::Write);
        }
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the sending thread panicked")));
        (sent, received)
    });
    // A send that failed means the connection is gone (reset, timed out), and the
    // read of the echo says it better: report the reader's error first.
    match (received, sent) {
        (Err(Echo::Closed(got)), _) => Err(format!(
            "the server closed the connection after {got} of the {} bytes of the echo",
            message.len()
        )),
        (Err(Echo::Failed(got, err)), _) if timed_out(&err) => Err(format!(
            "no echo within {waited}: {got} of the {} bytes came",
            message.len()
        )),
        (Err(Echo::Failed(got, err)), _) => Err(format!(
            "no echo: {err} ({got} of the {} bytes had come)",
            message.len()
        )),
        (Ok(()), Err(err)) if timed_out(&err) => Err(format!(
            "sending: the server took nothing more within {waited}"
        )),
        (Ok(()), Err(err)) => Err(format!("sending: {err}")),
        (Ok(()), Ok(())) if echo != message => Err(format!(
            "the echo is not what was sent: sent {}, got {}",
            show::bytes(message),
            show::bytes(&echo)
        )),
        (Ok(()), Ok(())) => {
            print_line(&format!("echo: {}", show::bytes(&echo)));
            Ok(())
        }
    }
}

/// Why an echo is not complete: the server closed after so many bytes, or a read
/// failed (a timeout among others) after so many.
enum Echo {
    Closed(usize),
    Failed(usize, io::Error),
}

/// recv(2) until `echo` is full.
fn receive_echo(mut stream: &TcpStream, echo: &mut [u8]) -> Result<(), Echo> {
    let mut got = 0;
    while got < echo.len() {
        match stream.read(&mut echo[got..]) {
            Ok(0) => return Err(Echo::Closed(got)),
            Ok(n) => got += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Echo::Failed(got, err)),
        }
    }
    Ok(())
}
// ANCHOR_END: exchange

/// The end: shutdown(SHUT_WR) sends our FIN, and lesson 15's server closes in
/// turn. Anything that comes before its close is more than an echo server sends.
fn close_cleanly(stream: &TcpStream, waited: &str) -> Result<(), String> {
    stream
        .shutdown(Shutdown::Write)
        .map_err(|err| format!("closing: {err}"))?;
    let mut rest = Vec::new();
    // At most a little more than we show: a server that kept sending is not read to
    // its end.
    match stream.take(4096).read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => Ok(()),
        Ok(_) => Err(format!(
            "the server sent {} more than the echo: {}",
            show::count(rest.len(), "byte"),
            show::bytes(&rest)
        )),
        Err(_) if !rest.is_empty() => Err(format!(
            "the server sent {} more than the echo: {}",
            show::count(rest.len(), "byte"),
            show::bytes(&rest)
        )),
        Err(err) => Err(format!(
            "closing: the server did not close after our half-close: {}",
            says(&err, waited)
        )),
    }
}

/// A line from the server as text: without its line end, escaped as the echo is
/// (`show::bytes`, without its quotes), so a server cannot move our terminal's cursor.
fn as_text(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut text = String::new();
    // show::bytes shortens after 64 bytes: quote the line in pieces of at most 64.
    for piece in line.chunks(show::SHOWN_BYTES) {
        let quoted = show::bytes(piece);
        text.push_str(&quoted[1..quoted.len() - 1]);
    }
    text
}

/// Reads up to and including the first `\n` (a byte at a time: nothing after the
/// greeting is taken from the socket), at most GREETING_LIMIT bytes.
fn read_line(mut stream: &TcpStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < GREETING_LIMIT {
        match stream.read(&mut byte) {
            Ok(0) => return Err(io::Error::other("the server closed the connection")),
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    return Ok(line);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::other(format!(
        "no end of line in the first {GREETING_LIMIT} bytes"
    )))
}

/// Each line of stdin (without its line end) until an empty line or the end, with a
/// `> ` prompt on a terminal. A line is held whole (and its echo too): one longer
/// than LINE_LIMIT is refused rather than read on for ever (`< /dev/zero`).
fn each_stdin_line(each: &mut impl FnMut(&[u8]) -> Result<(), String>) -> Result<(), String> {
    let stdin = io::stdin();
    let prompt = stdin.is_terminal();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    loop {
        if prompt {
            let mut out = io::stdout();
            if let Err(err) = write!(out, "> ").and_then(|()| out.flush()) {
                exit_on_stdout_error(&err);
            }
        }
        line.clear();
        let read = (&mut input)
            .take(LINE_LIMIT as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|err| format!("reading stdin: {err}"))?;
        if read == 0 {
            return Ok(());
        }
        let text = match line.strip_suffix(b"\n") {
            Some(text) => text,
            None if line.len() > LINE_LIMIT => {
                return Err(format!(
                    "a line of stdin longer than {} MiB: the client holds a line and its \
                     echo whole; send it in shorter lines",
                    LINE_LIMIT / (1024 * 1024)
                ));
            }
            None => &line,
        };
        if text.is_empty() {
            return Ok(());
        }
        each(text)?;
    }
}
