//! The C library's name functions that neither std nor nix wraps, each in a small
//! safe function: getaddrinfo(3) with its flags and canonical name, getnameinfo(3),
//! getservbyname(3)/getservbyport(3), getprotobyname(3)/getprotobynumber(3).
//!
//! The `unsafe` stays in here: C strings in, pointers out, and what the C library
//! allocated freed before returning (freeaddrinfo). Everything that leaves is owned
//! Rust data.

use std::ffi::{CStr, CString, c_char, c_int};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use nix::libc;

/// glibc's EAI_ADDRFAMILY ("address family for hostname not supported"). The libc
/// crate leaves it out (glibc defines it only with _GNU_SOURCE); its value is -9.
const EAI_ADDRFAMILY: c_int = -9;

/// What getaddrinfo and getnameinfo return when they fail: an EAI_* code (not an
/// errno: these functions have their own error numbers, Python's `socket.gaierror`).
#[derive(Debug, Clone, PartialEq)]
pub struct GaiError {
    pub code: c_int,
    /// gai_strerror(3): the C library's text for the code.
    pub text: String,
}

impl std::fmt::Display for GaiError {
    /// `EAI_NONAME (-2): Name or service not known`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", eai_name(self.code), self.code, self.text)
    }
}

// ANCHOR: eai
/// The name of an EAI_* code, as the C header and Python's socket module spell it.
pub fn eai_name(code: c_int) -> &'static str {
    match code {
        libc::EAI_BADFLAGS => "EAI_BADFLAGS",
        libc::EAI_NONAME => "EAI_NONAME",
        libc::EAI_AGAIN => "EAI_AGAIN",
        libc::EAI_FAIL => "EAI_FAIL",
        libc::EAI_NODATA => "EAI_NODATA",
        libc::EAI_FAMILY => "EAI_FAMILY",
        libc::EAI_SOCKTYPE => "EAI_SOCKTYPE",
        libc::EAI_SERVICE => "EAI_SERVICE",
        EAI_ADDRFAMILY => "EAI_ADDRFAMILY",
        libc::EAI_MEMORY => "EAI_MEMORY",
        libc::EAI_SYSTEM => "EAI_SYSTEM",
        libc::EAI_OVERFLOW => "EAI_OVERFLOW",
        _ => "EAI_?",
    }
}

fn gai_error(code: c_int) -> GaiError {
    if code == libc::EAI_SYSTEM {
        // The real cause is in errno.
        let err = std::io::Error::last_os_error();
        return GaiError {
            code,
            text: format!("System error: {err}"),
        };
    }
    // SAFETY: gai_strerror returns a pointer to a static string (never freed).
    let text = unsafe { CStr::from_ptr(libc::gai_strerror(code)) };
    GaiError {
        code,
        text: text.to_string_lossy().into_owned(),
    }
}
// ANCHOR_END: eai

/// What one asks getaddrinfo for: the `hints`. Zero means "any".
#[derive(Debug, Clone, Copy, Default)]
pub struct Hints {
    /// AF_INET, AF_INET6, or 0 (AF_UNSPEC).
    pub family: c_int,
    /// SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, or 0.
    pub socktype: c_int,
    /// AI_CANONNAME, AI_NUMERICHOST, AI_PASSIVE...
    pub flags: c_int,
}

/// One result of getaddrinfo: Python's tuple (family, type, proto, canonname, sockaddr).
#[derive(Debug, Clone, PartialEq)]
pub struct AddrInfo {
    pub family: c_int,
    pub socktype: c_int,
    pub protocol: c_int,
    /// Only on the first result, and only with AI_CANONNAME.
    pub canonname: Option<String>,
    pub addr: SocketAddr,
}

// ANCHOR: getaddrinfo
/// getaddrinfo(3): every address (and socket type) for `host` and `service`, in the
/// order a client should try them (RFC 6724's, /etc/gai.conf). `None` as host is
/// C's NULL: the loopback addresses, or with AI_PASSIVE the wildcard ones, for a
/// server to bind. The list getaddrinfo allocates is copied out and freed here.
pub fn getaddrinfo(
    host: Option<&str>,
    service: Option<&str>,
    hints: Hints,
) -> Result<Vec<AddrInfo>, GaiError> {
    let nul = |text: &str| {
        CString::new(text).map_err(|_| GaiError {
            code: libc::EAI_NONAME,
            text: "a name cannot contain a zero byte".into(),
        })
    };
    let host = host.map(nul).transpose()?;
    let service = service.map(nul).transpose()?;
    // SAFETY: an all-zero addrinfo is a valid "no hints" value (null pointers, 0s).
    let mut c_hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    c_hints.ai_family = hints.family;
    c_hints.ai_socktype = hints.socktype;
    c_hints.ai_flags = hints.flags;
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    let as_ptr = |text: &Option<CString>| text.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: the strings are NUL-terminated and live until the call returns; `list`
    // receives a list that we own and must give back to freeaddrinfo.
    let code = unsafe { libc::getaddrinfo(as_ptr(&host), as_ptr(&service), &c_hints, &mut list) };
    if code != 0 {
        return Err(gai_error(code));
    }
    let mut found = Vec::new();
    let mut next = list;
    while !next.is_null() {
        // SAFETY: `next` is a node of the list getaddrinfo returned, not yet freed.
        let info = unsafe { &*next };
        // SAFETY: ai_addr points to ai_addrlen bytes of a sockaddr of ai_family.
        if let Some(addr) = unsafe { socket_addr(info.ai_addr, info.ai_addrlen) } {
            let canonname = (!info.ai_canonname.is_null()).then(|| {
                // SAFETY: a NUL-terminated string inside the list.
                unsafe { CStr::from_ptr(info.ai_canonname) }
                    .to_string_lossy()
                    .into_owned()
            });
            found.push(AddrInfo {
                family: info.ai_family,
                socktype: info.ai_socktype,
                protocol: info.ai_protocol,
                canonname,
                addr,
            });
        }
        next = info.ai_next;
    }
    // SAFETY: the list came from getaddrinfo and is freed once; nothing points into it
    // any more (every string was copied).
    unsafe { libc::freeaddrinfo(list) };
    Ok(found)
}
// ANCHOR_END: getaddrinfo

/// A C sockaddr (sockaddr_in or sockaddr_in6) as a std address; `None` for another
/// family. The bytes of sin_port and sin_addr are in network order (big-endian).
///
/// # Safety
/// `addr` must point to `len` readable bytes of a sockaddr.
unsafe fn socket_addr(addr: *const libc::sockaddr, len: libc::socklen_t) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    let len = len as usize;
    // SAFETY: the caller guarantees `addr` is readable; the family is read first and
    // the whole struct only when `len` says it is there.
    match c_int::from(unsafe { (*addr).sa_family }) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            let v4 = unsafe { &*(addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            let v6 = unsafe { &*(addr as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                u32::from_be(v6.sin6_flowinfo),
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

// ANCHOR: getnameinfo
/// getnameinfo(3): the host name and service name of a socket address (/etc/hosts
/// and /etc/services first, as nsswitch.conf says), or the numbers with
/// NI_NUMERICHOST / NI_NUMERICSERV. Python's `socket.getnameinfo`.
pub fn getnameinfo(addr: SocketAddr, flags: c_int) -> Result<(String, String), GaiError> {
    let addr = socket2::SockAddr::from(addr);
    let mut host = [0 as c_char; libc::NI_MAXHOST as usize];
    // NI_MAXSERV: 32 in glibc's netdb.h (the libc crate has no constant for it).
    let mut service = [0 as c_char; 32];
    // SAFETY: `addr` is a valid sockaddr of its length; the buffers are writable for
    // the lengths given, and getnameinfo NUL-terminates what it writes.
    let code = unsafe {
        libc::getnameinfo(
            addr.as_ptr().cast(),
            addr.len(),
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            service.as_mut_ptr(),
            service.len() as libc::socklen_t,
            flags,
        )
    };
    if code != 0 {
        return Err(gai_error(code));
    }
    // SAFETY: both buffers hold NUL-terminated strings now.
    let text = |buffer: &[c_char]| unsafe { CStr::from_ptr(buffer.as_ptr()) };
    Ok((
        text(&host).to_string_lossy().into_owned(),
        text(&service).to_string_lossy().into_owned(),
    ))
}
// ANCHOR_END: getnameinfo

/// A line of /etc/services: its name, port, protocol and aliases.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub port: u16,
    pub protocol: String,
    pub aliases: Vec<String>,
}

/// A line of /etc/protocols: its name, number and aliases.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolEntry {
    pub name: String,
    pub number: i32,
    pub aliases: Vec<String>,
}

/// The strings of a NULL-terminated C array of strings (s_aliases, p_aliases).
///
/// # Safety
/// `list` must be null or a NULL-terminated array of NUL-terminated strings.
unsafe fn strings(mut list: *mut *mut c_char) -> Vec<String> {
    let mut found = Vec::new();
    if list.is_null() {
        return found;
    }
    // SAFETY: as the caller guarantees.
    unsafe {
        while !(*list).is_null() {
            found.push(CStr::from_ptr(*list).to_string_lossy().into_owned());
            list = list.add(1);
        }
    }
    found
}

// ANCHOR: getservbyname
/// getservbyname(3) (`name`) or getservbyport(3) (a number): the line of
/// /etc/services for it; `protocol` "tcp", "udp" or `None` for the first line of
/// either. `None` when there is no such line.
///
/// These functions return a pointer into one static buffer of the C library, which
/// the next call overwrites, and they are not thread-safe: the entry is copied out at
/// once, and this client calls them from one thread only. (getservbyname_r exists
/// for threaded programs.)
pub fn service(name_or_port: &str, protocol: Option<&str>) -> Option<Service> {
    let protocol = match protocol.map(CString::new) {
        Some(Ok(protocol)) => Some(protocol),
        Some(Err(_)) => return None,
        None => None,
    };
    let proto_ptr = protocol.as_ref().map_or(std::ptr::null(), |p| p.as_ptr());
    let entry = match name_or_port.parse::<u16>() {
        // The port goes in network byte order: htons, in C.
        // SAFETY: proto_ptr is null or a NUL-terminated string.
        Ok(port) => unsafe { libc::getservbyport(c_int::from(port.to_be()), proto_ptr) },
        Err(_) => {
            let name = CString::new(name_or_port).ok()?;
            // SAFETY: both are NUL-terminated strings (or null for the protocol).
            unsafe { libc::getservbyname(name.as_ptr(), proto_ptr) }
        }
    };
    if entry.is_null() {
        return None;
    }
    // SAFETY: a servent in the C library's static buffer, read before any other call.
    unsafe {
        let entry = &*entry;
        Some(Service {
            name: CStr::from_ptr(entry.s_name).to_string_lossy().into_owned(),
            // s_port is in network byte order, in the low 16 bits of an int.
            port: u16::from_be(entry.s_port as u16),
            protocol: CStr::from_ptr(entry.s_proto).to_string_lossy().into_owned(),
            aliases: strings(entry.s_aliases),
        })
    }
}
// ANCHOR_END: getservbyname

/// getprotobyname(3), or getprotobynumber(3) for a number: the line of
/// /etc/protocols. Same static buffer as [`service`], same care.
pub fn protocol(name_or_number: &str) -> Option<ProtocolEntry> {
    let entry = match name_or_number.parse::<c_int>() {
        // SAFETY: a plain number in, a pointer to a static entry (or null) out.
        Ok(number) => unsafe { libc::getprotobynumber(number) },
        Err(_) => {
            let name = CString::new(name_or_number).ok()?;
            // SAFETY: a NUL-terminated string.
            unsafe { libc::getprotobyname(name.as_ptr()) }
        }
    };
    if entry.is_null() {
        return None;
    }
    // SAFETY: a protoent in the C library's static buffer, read at once.
    unsafe {
        let entry = &*entry;
        Some(ProtocolEntry {
            name: CStr::from_ptr(entry.p_name).to_string_lossy().into_owned(),
            number: entry.p_proto,
            aliases: strings(entry.p_aliases),
        })
    }
}
