//! Lesson 16, the client: talks to the local server over an AF_UNIX stream (default),
//! AF_UNIX datagrams (`--dgram`) or UDP (`--udp`); passes an open file to the server
//! (`--pass-fd FILE`); or, with `--socketpair`, needs no server at all: it makes a
//! connected pair of sockets, forks, and its child process echoes.
//!
//!   terminal 1: cargo run --bin 16_local_server
//!   terminal 2: cargo run --bin 16_local_client -- hello
//!               cargo run --bin 16_local_client -- --pass-fd /etc/hostname
//!               cargo run --bin 16_local_client -- --socketpair hello
//!
//! Each message goes out with a `\n`; a stream echo is printed as it comes back, a
//! datagram reply (`echo:` + the datagram) as one line.

mod local_path;

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair,
};
use nix::sys::stat::{Mode, umask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use workbook::cli::{Args, Cli};
use workbook::{exit_on_stdout_error, exit_with_error, print_line, signal};

const SERVER: &str = "16_local_server";
/// The longest the client waits for one reply.
const REPLY_WAIT: Duration = Duration::from_secs(5);
/// UDP may lose a datagram (lesson 03): ask this many times before giving up.
const UDP_TRIES: u32 = 3;

fn main() {
    let args = Cli::new(
        "16_local_client",
        "Lesson 16: sends each message to the local server (AF_UNIX stream by default, \
         --dgram, --udp), passes an open file to it (--pass-fd), or echoes through a \
         socketpair with a forked child (--socketpair, no server needed).",
        10000,
    )
    .value(
        "--path",
        "PATH",
        "the server's socket file (default $TMPDIR/socket-workbook-UID/16_local.sock)",
    )
    .value(
        "--abstract",
        "NAME",
        "the server's Linux abstract name instead",
    )
    .switch(
        "--dgram",
        "AF_UNIX datagrams (binds a reply path of its own, removed at the end)",
    )
    .switch(
        "--udp",
        "UDP datagrams to --host/--port (default port 10000)",
    )
    .switch(
        "--socketpair",
        "no server: socketpair(2), fork(2), the child echoes",
    )
    .value(
        "--pass-fd",
        "FILE",
        "open FILE and send its descriptor (SCM_RIGHTS); the server reads it",
    )
    .positional("MESSAGE", "messages to send (default: each line of stdin)")
    .parse();
    let modes = ["--dgram", "--udp", "--socketpair"]
        .iter()
        .filter(|mode| args.flag(mode))
        .count()
        + usize::from(args.get::<String>("--pass-fd").is_some());
    if modes > 1 {
        args.usage_error("--dgram, --udp, --socketpair and --pass-fd go one at a time");
    }
    if args.flag("--udp") {
        udp(&args);
    } else if args.flag("--socketpair") {
        socketpair_and_fork(&args);
    } else if args.flag("--dgram") {
        datagrams(&args);
    } else if let Some(file) = args.get::<String>("--pass-fd") {
        pass_fd(&args, &file);
    } else {
        stream(&args);
    }
}

/// How to start the server this client looks for, for hints: `cargo run --bin
/// 16_local_server -- --dgram --abstract NAME` and the like.
fn server_command(args: &Args, dgram: bool) -> String {
    let mut flags = Vec::new();
    if dgram {
        flags.push("--dgram".to_string());
    }
    if let Some(name) = args.get::<String>("--abstract") {
        flags.push(format!("--abstract {name}"));
    } else if let Some(path) = args.get::<String>("--path") {
        flags.push(format!("--path {path}"));
    }
    match flags.is_empty() {
        true => format!("cargo run --bin {SERVER}"),
        false => format!("cargo run --bin {SERVER} -- {}", flags.join(" ")),
    }
}

/// The server's address: `--abstract NAME`, `--path PATH`, or the default path.
fn server_address(args: &Args) -> (SocketAddr, String) {
    let path = args.get::<String>("--path").map(PathBuf::from);
    let name = args.get::<String>("--abstract");
    let addr = match (&path, &name) {
        (Some(_), Some(_)) => args.usage_error("give --path or --abstract, not both"),
        (_, Some(name)) => SocketAddr::from_abstract_name(name.as_bytes()),
        (Some(path), None) => SocketAddr::from_pathname(path),
        (None, None) => SocketAddr::from_pathname(local_path::default_path()),
    };
    let shown = match (&path, &name) {
        (_, Some(name)) => local_path::shown(None, Some(name)),
        (Some(path), None) => local_path::shown(Some(path), None),
        (None, None) => local_path::shown(Some(&local_path::default_path()), None),
    };
    match addr {
        Ok(addr) => (addr, shown),
        Err(err) => exit_with_error(&format!("bad address {shown}: {err}")),
    }
}

fn connect_failed(shown: &str, err: &io::Error, server: &str) -> String {
    let hint = match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            format!("; is the server running? start it with: {server}")
        }
        io::ErrorKind::PermissionDenied => {
            "; the socket file's permissions do not let this user connect (see --mode)".into()
        }
        // A stream connect to a datagram socket, or the other way round.
        _ if err.raw_os_error() == Some(nix::libc::EPROTOTYPE) => {
            if server.contains("--dgram") {
                "; a stream server is there: leave out --dgram".into()
            } else {
                "; a datagram server is there: add --dgram".into()
            }
        }
        _ => String::new(),
    };
    format!("cannot connect to {shown}: {err}{hint}")
}

// ANCHOR: stream
/// connect(2) to the path, then each message and its echo, as over TCP.
/// (Python: `s = socket(AF_UNIX, SOCK_STREAM); s.connect(path)`.)
fn stream(args: &Args) {
    let (addr, shown) = server_address(args);
    let stream = UnixStream::connect_addr(&addr).unwrap_or_else(|err| {
        exit_with_error(&connect_failed(&shown, &err, &server_command(args, false)))
    });
    set_timeouts(&stream);
    let result = args.each_message(|message| exchange(&stream, message, b""));
    if let Err(err) = result {
        exit_with_error(&format!("talking to {shown}: {}", describe(&err)));
    }
}
// ANCHOR_END: stream

// ANCHOR: exchange
/// One message and its echo: the message and its `\n` go out from a thread of their
/// own while this thread reads the echo and prints it (after `prefix`) as it comes.
/// Writing all of a long line before reading would deadlock: once the echo fills the
/// server's send buffer and our receive buffer, the server stops reading, our write
/// stops, and each end waits for the other for ever (as `src/echo_client.rs` says).
fn exchange(stream: &UnixStream, message: &[u8], prefix: &[u8]) -> io::Result<()> {
    thread::scope(|scope| {
        let sender = scope.spawn(|| send_line(stream, message));
        let echoed = print_echo(stream, message.len() + 1, prefix);
        if echoed.is_err() {
            // The sender may wait in a write nobody will read now: end it at once.
            let _ = stream.shutdown(Shutdown::Write);
        }
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the sending thread panicked")));
        echoed.and(sent)
    })
}

/// writev(2): the message and its `\n` in one call (one piece for the server to
/// read, for a short line), without copying the message to add a byte.
fn send_line(mut stream: &UnixStream, message: &[u8]) -> io::Result<()> {
    let mut both = [IoSlice::new(message), IoSlice::new(b"\n")];
    let mut left = &mut both[..];
    while !left.is_empty() {
        match stream.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(sent) => IoSlice::advance_slices(&mut left, sent),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Reads `length` bytes of echo and prints them as they arrive, a piece at a time.
fn print_echo(mut stream: &UnixStream, length: usize, prefix: &[u8]) -> io::Result<()> {
    let mut piece = vec![0u8; length.min(64 * 1024)];
    let mut echoed = 0;
    while echoed < length {
        let want = (length - echoed).min(piece.len());
        let got = match stream.read(&mut piece[..want]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(got) => got,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                if echoed > 0 {
                    // End the cut-off echo, so that the error gets a line of its own.
                    print_bytes(b"\n");
                }
                return Err(err);
            }
        };
        if echoed == 0 {
            print_bytes(prefix);
        }
        print_bytes(&piece[..got]);
        echoed += got;
    }
    Ok(())
}
// ANCHOR_END: exchange

fn set_timeouts(stream: &UnixStream) {
    let set = stream
        .set_read_timeout(Some(REPLY_WAIT))
        .and_then(|()| stream.set_write_timeout(Some(REPLY_WAIT)));
    if let Err(err) = set {
        exit_with_error(&format!("cannot set timeouts: {err}"));
    }
}

fn describe(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no reply within {} s", REPLY_WAIT.as_secs())
        }
        io::ErrorKind::UnexpectedEof => "the server closed the connection".into(),
        _ => err.to_string(),
    }
}

/// Writes bytes to stdout as they are (the echo has its own `\n`).
fn print_bytes(bytes: &[u8]) {
    let mut out = io::stdout().lock();
    if let Err(err) = out.write_all(bytes).and_then(|()| out.flush()) {
        // `client | head -1`: stop quietly, and leave no reply path nor child behind.
        remove_reply_path();
        reap_child();
        exit_on_stdout_error(&err);
    }
}

// ANCHOR: pass_fd
/// open(2) a file, and send its descriptor with sendmsg(2): the descriptor travels as
/// ancillary data of type SCM_RIGHTS, with at least one byte of ordinary data (a
/// stream carries control data only along with data). The kernel installs a new
/// descriptor for the same open file in the server. (Python:
/// `socket.send_fds(s, [b"fd"], [f.fileno()])`.)
fn pass_fd(args: &Args, file_name: &str) {
    // O_NONBLOCK: open(2) of a FIFO waits until someone opens it for writing, perhaps
    // for ever; non-blocking, it returns at once (a regular file ignores the flag).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(file_name)
        .unwrap_or_else(|err| exit_with_error(&format!("cannot open {file_name}: {err}")));
    let (addr, shown) = server_address(args);
    let mut stream = UnixStream::connect_addr(&addr).unwrap_or_else(|err| {
        exit_with_error(&connect_failed(&shown, &err, &server_command(args, false)))
    });
    set_timeouts(&stream);
    let fds = [file.as_raw_fd()];
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(b"fd")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    );
    if let Err(err) = sent {
        exit_with_error(&format!("sendmsg to {shown}: {err}"));
    }
    // Our descriptor can be closed now: the server has its own for the same file.
    drop(file);
    print_line(&format!("sent the descriptor of {file_name} to {shown}"));
    let reply = read_line(&mut stream)
        .unwrap_or_else(|err| exit_with_error(&format!("from {shown}: {}", describe(&err))));
    print_bytes(&reply);
}
// ANCHOR_END: pass_fd

/// One reply line, at most 1 KiB (the server's `fd:` line is shorter).
fn read_line(stream: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        if line.len() > 1024 {
            return Err(io::Error::other("the reply line is longer than 1 KiB"));
        }
        match stream.read(&mut byte) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => line.push(byte[0]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(line)
}

// ANCHOR: dgram
/// AF_UNIX datagrams. The server can answer only a sender with an address, and an
/// AF_UNIX socket gets none unless it binds one (UDP's kernel picks a port; here
/// nothing is picked): so the client binds a path of its own, next to the server's
/// socket, and removes it when done, since close(2) leaves the file behind.
fn datagrams(args: &Args) {
    let (server, shown) = server_address(args);
    // Next to the server's socket (the same directory, so the same access rules), or
    // in the temporary directory when the server has an abstract name.
    let dir = match (
        args.get::<String>("--path"),
        args.get::<String>("--abstract"),
    ) {
        (Some(path), _) => PathBuf::from(path)
            .parent()
            .map_or_else(|| PathBuf::from("."), PathBuf::from),
        (None, Some(_)) => std::env::temp_dir(),
        (None, None) => local_path::default_dir(),
    };
    let own = dir.join(format!("16_local_client-{}.sock", std::process::id()));
    // Mode 0600 whatever the umask (as the server does for its own file): only this
    // user may send to it. This process has one thread here, so the umask, which is
    // the process's, changes nothing else.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixDatagram::bind(&own);
    umask(old);
    let socket = bound.unwrap_or_else(|err| exit_with_error(&reply_bind_failed(args, &own, &err)));
    if let Ok(mut path) = REPLY_PATH.lock() {
        *path = Some(own.clone());
    }
    // Ctrl-C (or SIGTERM) would end the process without removing it: remove it first.
    let handler = signal::on_shutdown(|| {
        remove_reply_path();
        std::process::exit(130);
    });
    let result = handler.and_then(|()| send_datagrams(args, &socket, &server, &shown));
    // Removed before exit_with_error, which exits without running destructors.
    remove_reply_path();
    if let Err(err) = result {
        exit_with_error(&err);
    }
}

/// The client's reply path, while it exists: whichever way the client ends (done, an
/// error, stdout closed, Ctrl-C) removes it.
static REPLY_PATH: Mutex<Option<PathBuf>> = Mutex::new(None);

fn remove_reply_path() {
    if let Some(path) = REPLY_PATH.lock().ok().and_then(|mut path| path.take()) {
        let _ = std::fs::remove_file(path);
    }
}

fn reply_bind_failed(args: &Args, own: &Path, err: &io::Error) -> String {
    let dir = own.parent().unwrap_or(Path::new("."));
    let hint = match err.kind() {
        io::ErrorKind::InvalidInput => format!(
            "; a socket path must be shorter than 108 bytes (sun_path), and this one, \
             beside the server's, is {} bytes: give the server a shorter --path",
            own.as_os_str().len()
        ),
        io::ErrorKind::NotFound if args.get::<String>("--path").is_none() => format!(
            "; its directory {} does not exist: the server makes it, is it running? \
             start it with: {}",
            dir.display(),
            server_command(args, true)
        ),
        io::ErrorKind::NotFound => format!("; the directory {} does not exist", dir.display()),
        io::ErrorKind::PermissionDenied => {
            format!("; this user may not create files in {}", dir.display())
        }
        _ => String::new(),
    };
    format!("cannot bind the reply path {}: {err}{hint}", own.display())
}

fn send_datagrams(
    args: &Args,
    socket: &UnixDatagram,
    server: &SocketAddr,
    shown: &str,
) -> Result<(), String> {
    let failed = |err: io::Error| match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            connect_failed(shown, &err, &server_command(args, true))
        }
        _ if err.raw_os_error() == Some(nix::libc::EPROTOTYPE) => {
            connect_failed(shown, &err, &server_command(args, true))
        }
        _ => format!("talking to {shown}: {}", describe(&err)),
    };
    // connect(2) on a datagram socket: send() goes to the server, and the kernel
    // lets only the server send to us. Without it, anyone who can write to our path
    // (it shows in the server's log) could slip us a reply.
    socket.connect_addr(server).map_err(failed)?;
    socket
        .set_read_timeout(Some(REPLY_WAIT))
        .map_err(|err| format!("cannot set a timeout: {err}"))?;
    let mut reply = vec![0u8; 65_536];
    let result = args.each_message(|message| {
        // send(2); the kernel fills in our bound path as the sender, for the
        // server's recvfrom.
        socket.send(message)?;
        let n = socket.recv(&mut reply)?;
        print_bytes(&reply[..n]);
        print_bytes(b"\n");
        Ok(())
    });
    result.map_err(failed)
}
// ANCHOR_END: dgram

// ANCHOR: udp
/// The seed's UdpClient: sendto, recvfrom, with a timeout and a few tries, since UDP
/// may lose a datagram either way. A retry has a cost: if the first datagram was not
/// lost but only slow, two replies come, and the second would be read as the answer
/// to the next message. So only `echo:` + this message counts as its reply; anything
/// else is a late or duplicate reply to an earlier one, and is skipped.
fn udp(args: &Args) {
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));
    let bind_to = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    // connect(2) on a UDP socket: send() goes to `addr`, and only datagrams from
    // `addr` are received.
    let socket = UdpSocket::bind(bind_to)
        .and_then(|socket| socket.connect(addr).map(|()| socket))
        .unwrap_or_else(|err| exit_with_error(&format!("cannot open a UDP socket: {err}")));
    let mut reply = vec![0u8; 65_536];
    let mut tries = 0;
    let result = args.each_message(|message| {
        let want = [b"echo:", message].concat();
        tries = 0;
        while tries < UDP_TRIES {
            tries += 1;
            socket.send(message)?;
            let deadline = Instant::now() + REPLY_WAIT;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                socket.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
                match socket.recv(&mut reply) {
                    Ok(n) if reply[..n] == want[..] => {
                        print_bytes(&want);
                        print_bytes(b"\n");
                        return Ok(());
                    }
                    // A reply to an earlier try or message: not this one's.
                    Ok(_) => {}
                    Err(err)
                        if matches!(
                            err.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        Err(io::ErrorKind::TimedOut.into())
    });
    if let Err(err) = result {
        let port = match addr.port() {
            10000 => String::new(),
            port => format!(" --port {port}"),
        };
        let hint = format!("start it with: cargo run --bin {SERVER} -- --udp{port}");
        let tried = match tries {
            1 => "after 1 try".to_string(),
            n => format!("after {n} tries"),
        };
        let why = match err.kind() {
            // The ICMP "port unreachable" that came back for a datagram, reported
            // by the next call on the connected socket.
            io::ErrorKind::ConnectionRefused => {
                format!("nothing listens at {addr} ({err}, {tried}); is the server running? {hint}")
            }
            io::ErrorKind::TimedOut => format!(
                "no reply from {addr} {tried} of {} s each; is the server running? {hint}",
                REPLY_WAIT.as_secs()
            ),
            _ => format!("talking to {addr}: {err} ({tried})"),
        };
        exit_with_error(&why);
    }
}
// ANCHOR_END: udp

// ANCHOR: socketpair
/// socketpair(2) makes two connected AF_UNIX sockets with no name at all; fork(2)
/// makes a child process that inherits both. Each side closes the end it does not
/// use; the child echoes what the parent sends, until the parent closes its end.
/// (Python: `a, b = socket.socketpair(); pid = os.fork()`.)
///
/// fork(2) copies only the calling thread. Had this program other threads, a lock
/// one of them held at that instant (the allocator's, stdout's) would stay locked for
/// ever in the child, and the child's first allocation or print could hang. So the
/// fork comes first, while the process has one thread (checked below), and the child
/// only reads and writes with a buffer allocated before the fork, then calls _exit(2).
fn socketpair_and_fork(args: &Args) {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |tasks| tasks.count());
    if threads != 1 {
        exit_with_error(&format!(
            "not forking: this process has {threads} threads (fork copies only one)"
        ));
    }
    let (parent_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap_or_else(|err| exit_with_error(&format!("socketpair: {err}")));
    let mut buffer = vec![0u8; 64 * 1024];
    // Nothing is buffered in stdout now (print_line flushes), so the child cannot
    // print it a second time.
    match unsafe { fork() } {
        Err(err) => exit_with_error(&format!("fork: {err}")),
        Ok(ForkResult::Child) => {
            drop(parent_end);
            child_echoes(&child_end, &mut buffer);
        }
        Ok(ForkResult::Parent { child }) => {
            drop(child_end);
            parent_talks(args, parent_end, child);
        }
    }
}

/// The child: echo until the parent's end closes, then _exit(2) without running
/// the parent's destructors or exit handlers a second time.
fn child_echoes(end: &OwnedFd, buffer: &mut [u8]) -> ! {
    loop {
        let n = match nix::unistd::read(end, buffer) {
            Ok(0) | Err(_) => unsafe { nix::libc::_exit(0) },
            Ok(n) => n,
        };
        let mut sent = 0;
        while sent < n {
            match nix::unistd::write(end, &buffer[sent..n]) {
                Ok(written) => sent += written,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => unsafe { nix::libc::_exit(1) },
            }
        }
    }
}

/// The parent: each message to the child and its echo back; then close its end (the
/// child reads EOF and exits) and waitpid(2), which reaps the child. Without it the
/// child would stay a zombie (state Z in ps) for as long as the parent lives.
fn parent_talks(args: &Args, end: OwnedFd, child: nix::unistd::Pid) {
    if let Ok(mut forked) = CHILD.lock() {
        *forked = Some(child);
    }
    print_bytes(format!("forked child {child}; it echoes over a socketpair\n").as_bytes());
    let stream = UnixStream::from(end);
    set_timeouts(&stream);
    // The parent may start threads now (the child is its own process already).
    let result = args.each_message(|message| exchange(&stream, message, b"child echoed: "));
    drop(stream);
    let reaped = CHILD.lock().ok().and_then(|mut forked| forked.take());
    let reaped = waitpid(reaped.unwrap_or(child), None);
    if let Err(err) = result {
        exit_with_error(&format!("talking to child {child}: {}", describe(&err)));
    }
    match reaped {
        Ok(WaitStatus::Exited(pid, code)) => {
            print_line(&format!("child {pid} exited with status {code}; reaped"));
        }
        Ok(other) => exit_with_error(&format!("child {child} ended so: {other:?}")),
        Err(err) => exit_with_error(&format!("waitpid({child}): {err}")),
    }
}
// ANCHOR_END: socketpair

/// The forked child, until it is reaped: an exit the parent did not plan (stdout
/// closed) reaps it too.
static CHILD: Mutex<Option<nix::unistd::Pid>> = Mutex::new(None);

/// Ends the child (SIGKILL: its socket end may still be open in this process, so it
/// would not see end of file) and reaps it with waitpid(2).
fn reap_child() {
    if let Some(child) = CHILD.lock().ok().and_then(|mut forked| forked.take()) {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(child, None);
    }
}
