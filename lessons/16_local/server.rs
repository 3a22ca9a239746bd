//! Lesson 16, the server: local sockets. An AF_UNIX stream echo server on a path in the
//! file system (or a Linux abstract name), with what only a local socket has: file
//! permissions as access control, the peer's credentials (SO_PEERCRED), and open file
//! descriptors passed over the connection (SCM_RIGHTS). `--dgram` is an AF_UNIX
//! datagram echo server, `--udp` the same over UDP: each datagram is answered with
//! `echo:` and the datagram.
//!
//!   terminal 1: cargo run --bin 16_local_server
//!   terminal 2: cargo run --bin 16_local_client -- hello
//!               cargo run --bin 16_local_client -- --pass-fd /etc/hostname
//!
//! The first line says where it listens: `listening on unix:PATH` (a file),
//! `listening on unix:@NAME` (an abstract name), or `listening on IP:PORT` (--udp).

mod local_path;

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{
    DirBuilderExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt,
};
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{UnixCredentials, getsockopt, sockopt};
use nix::sys::stat::{Mode, umask};
use workbook::cli::{Args, Cli};
use workbook::live::{LiveConnections, Registered};
use workbook::log::RateLimitedLog;
use workbook::{exit_with_error, log, show, signal};

/// The seed's UDP echo server listens on port 10000; so does `--udp`.
const DEFAULT_PORT: u16 = 10000;
const READ_SIZE: usize = 64 * 1024;
/// The most a server reads from a file whose descriptor a client passed. The client
/// chooses the file; the server must not read a 10 GB one into memory for it.
const PASSED_FILE_LIMIT: usize = 4096;
/// How long live connections get to finish after Ctrl-C (as in lesson 06).
const GRACE: Duration = Duration::from_millis(500);
/// The largest UDP payload over IPv4; an AF_UNIX datagram may be larger (up to the
/// socket's send buffer), and is cut at this size.
const DATAGRAM_SIZE: usize = 65_507;
/// After a failed accept(2) (EMFILE: out of descriptors), wait this long before the
/// next try.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Where the server is reachable: a file, or a name in Linux's abstract namespace.
enum Place {
    File(PathBuf),
    Abstract(String),
}

fn main() {
    let args = Cli::new(
        "16_local_server",
        "Lesson 16: an AF_UNIX echo server (stream by default, --dgram for datagrams, \
         --udp for the same datagram echo over UDP); it logs each client's pid, uid and \
         gid, and reads files whose descriptors clients pass to it.",
        DEFAULT_PORT,
    )
    .value(
        "--path",
        "PATH",
        "the socket file (default $TMPDIR/socket-workbook-UID/16_local.sock)",
    )
    .value(
        "--abstract",
        "NAME",
        "listen on Linux's abstract name NAME instead of a file (no file, no permissions)",
    )
    .value(
        "--mode",
        "OCTAL",
        "permissions of the socket file (default 600: only this user may connect)",
    )
    .switch(
        "--dgram",
        "AF_UNIX datagrams: each is answered with `echo:` + the datagram",
    )
    .switch(
        "--udp",
        "the same datagram echo over UDP on --host/--port (default port 10000)",
    )
    .value(
        "--max-threads",
        "N",
        "stream: at most N connection threads at once (default 256)",
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let quiet = args.flag("--quiet");
    if args.flag("--udp") {
        if args.flag("--dgram") || args.get::<String>("--path").is_some() {
            args.usage_error("--udp listens on --host/--port: not with --dgram or --path");
        }
        if args.get::<String>("--abstract").is_some() || args.get::<String>("--mode").is_some() {
            args.usage_error("--abstract and --mode are for AF_UNIX, not --udp");
        }
        serve_udp(&args, quiet);
        return;
    }
    let place = place_from(&args);
    let mode = mode_from(&args, &place);
    if args.flag("--dgram") {
        serve_datagrams(&place, mode, quiet);
    } else {
        let max_threads: usize = args.get_or("--max-threads", 256);
        if max_threads == 0 {
            args.usage_error("--max-threads must be at least 1");
        }
        let options = StreamOptions { max_threads, quiet };
        serve_streams(&place, mode, &options);
    }
}

fn place_from(args: &Args) -> Place {
    match (
        args.get::<String>("--path"),
        args.get::<String>("--abstract"),
    ) {
        (Some(_), Some(_)) => args.usage_error("give --path or --abstract, not both"),
        (None, Some(name)) if name.is_empty() => args.usage_error("--abstract needs a name"),
        (None, Some(name)) => Place::Abstract(name),
        (Some(path), None) if path.is_empty() => args.usage_error("--path needs a path"),
        (Some(path), None) => Place::File(PathBuf::from(path)),
        (None, None) => {
            make_default_directory();
            Place::File(local_path::default_path())
        }
    }
}

/// `--mode 600` (octal, like chmod): the permission bits the socket file gets.
fn mode_from(args: &Args, place: &Place) -> u32 {
    let Some(text) = args.get::<String>("--mode") else {
        return 0o600;
    };
    if matches!(place, Place::Abstract(_)) {
        args.usage_error("--mode is for a socket file; an abstract name has no permissions");
    }
    match u32::from_str_radix(&text, 8) {
        Ok(mode) if mode <= 0o777 => mode,
        _ => args.usage_error(&format!(
            "--mode takes octal permissions like 600 or 660, not '{text}'"
        )),
    }
}

// ANCHOR: default_directory
/// The per-user directory of the default path, made with mode 0700 if it is not
/// there. /tmp is shared by every user: if the directory exists already it must be
/// ours and closed to others, or someone else could swap our socket for theirs.
fn make_default_directory() {
    let dir = local_path::default_dir();
    let made = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    if let Err(err) = made {
        if err.kind() != io::ErrorKind::AlreadyExists {
            exit_with_error(&format!("cannot create {}: {err}", dir.display()));
        }
    }
    let checked = std::fs::symlink_metadata(&dir);
    match checked {
        Ok(meta)
            if meta.is_dir()
                && meta.uid() == nix::unistd::getuid().as_raw()
                && meta.permissions().mode() & 0o077 == 0 => {}
        Ok(_) => exit_with_error(&format!(
            "{} is not a directory of this user's with mode 0700: not using it; \
             give another place with --path",
            dir.display()
        )),
        Err(err) => exit_with_error(&format!("cannot look at {}: {err}", dir.display())),
    }
}
// ANCHOR_END: default_directory

// ANCHOR: lock
/// The lock file beside the socket file, `PATH.lock`, locked with flock(2) before the
/// stale-file probe and held until the server ends. Probing, removing a stale file
/// and binding are three steps; without the lock, two servers starting at once could
/// both find the file stale, and the slower one would remove the faster one's fresh
/// socket. With it, only one server at a time is between probe and bind, and a
/// running server keeps others out without being probed at all. The kernel releases
/// a flock when its holder dies, even by `kill -9`: a lock file left behind is not
/// locked, and the next server simply takes it.
fn take_lock(path: &Path) -> Lock {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    // A few tries: see the check of the inode below.
    for _ in 0..10 {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path);
        let file = opened.unwrap_or_else(|err| {
            exit_with_error(&bind_failed(&lock_path, "open the lock file", &err))
        });
        let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, Errno::EWOULDBLOCK)) => exit_with_error(&format!(
                "{} is in use: another server holds its lock file {} (it runs, or is \
                 starting); stop that server, or choose another --path",
                path.display(),
                lock_path.display()
            )),
            Err((_, err)) => {
                exit_with_error(&format!("cannot lock {}: {err}", lock_path.display()))
            }
        };
        // A server that stops removes its lock file while it holds the lock. If we
        // opened the file just before that, we now hold a lock on a file with no
        // name, which locks nothing: the path must still name the file we locked.
        let inode = |meta: std::fs::Metadata| (meta.dev(), meta.ino());
        let ours = locked.metadata().ok().map(inode);
        if ours.is_some() && std::fs::metadata(&lock_path).ok().map(inode) == ours {
            return Lock {
                path: lock_path,
                file: locked,
            };
        }
    }
    exit_with_error(&format!(
        "cannot lock {}: it keeps being replaced",
        lock_path.display()
    ))
}
// ANCHOR_END: lock

/// A lock file this server holds (closing the file releases the lock).
struct Lock {
    path: PathBuf,
    file: Flock<File>,
}

impl Lock {
    /// unlink(2) the lock file while still holding the lock, then close it.
    fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

// ANCHOR: stale
/// Before bind(2), under the lock: a file already at `path` is either left over from
/// a server that died without removing it (bind would fail with EADDRINUSE for ever),
/// or the socket of a server that is running and did not take the lock (another
/// program's). Only a connect(2) can tell them apart: ECONNREFUSED means nobody
/// listens there (stale: remove it); success, or EPROTOTYPE (the socket bound there
/// is not a stream socket: a datagram server), means a live server: refuse to take
/// it over. Returns a line for the log when it removed a stale file.
fn remove_if_stale(path: &Path) -> Result<Option<String>, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot look at {}: {err}", path.display())),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} exists and is not a socket: not removing it; choose another --path",
            path.display()
        ));
    }
    match probe(path) {
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
            if let Err(err) = std::fs::remove_file(path) {
                return Err(format!(
                    "cannot remove the stale socket {}: {err}",
                    path.display()
                ));
            }
            Ok(Some(format!(
                "removed stale socket file {} (nobody listened on it)",
                path.display()
            )))
        }
        Ok(()) => Err(format!(
            "{} is in use: a server is listening on it (a connect succeeded); stop that \
             server, or choose another --path",
            path.display()
        )),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Err(format!(
            "{} is in use: a server is bound to it, too busy to accept (its backlog is \
             full); stop that server, or choose another --path",
            path.display()
        )),
        Err(err) if err.raw_os_error() == Some(Errno::EPROTOTYPE as i32) => Err(format!(
            "{} is in use: a datagram server is bound to it (a stream connect gets \
             EPROTOTYPE); stop that server, or choose another --path",
            path.display()
        )),
        Err(err) => Err(format!(
            "{} exists and cannot be probed ({err}): not removing it",
            path.display()
        )),
    }
}

/// connect(2) from a non-blocking stream socket: an AF_UNIX connect to a live server
/// whose backlog is full would otherwise wait until it accepts; non-blocking, it
/// fails at once with EAGAIN (which still means "a server is there").
fn probe(path: &Path) -> io::Result<()> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&socket2::SockAddr::unix(path)?)
}
// ANCHOR_END: stale

// ANCHOR: bind_with_mode
/// bind(2) creates the socket file with mode 0777 minus the umask. A chmod(2) after
/// bind would leave a moment in which the file is more open than asked (with a umask
/// of 002, group members could connect), so the umask itself is set to exactly the
/// bits NOT wanted, around the bind, and put back. umask(2) is per process: this runs
/// before the server starts any thread (the log's writer starts on the first line),
/// so no other file is created meanwhile with the wrong umask.
fn bind_with_mode<T>(
    path: &Path,
    mode: u32,
    bind: impl for<'a> FnOnce(&'a Path) -> io::Result<T>,
) -> (T, BoundFile, Option<String>) {
    let lock = take_lock(path);
    let removed = match remove_if_stale(path) {
        Ok(removed) => removed,
        Err(message) => {
            lock.remove();
            exit_with_error(&message)
        }
    };
    let old = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = bind(path);
    umask(old);
    match bound {
        Ok(bound) => (bound, BoundFile::new(path, lock), removed),
        Err(err) => {
            lock.remove();
            exit_with_error(&bind_failed(path, "bind", &err))
        }
    }
}
// ANCHOR_END: bind_with_mode

fn bind_failed(path: &Path, what: &str, err: &io::Error) -> String {
    let hint = match err.kind() {
        io::ErrorKind::NotFound => "; its directory does not exist",
        io::ErrorKind::PermissionDenied => "; this user may not create files in that directory",
        io::ErrorKind::InvalidInput => {
            "; a socket path must be shorter than 108 bytes (sun_path): choose a shorter --path"
        }
        io::ErrorKind::AddrInUse => "; another server took the path meanwhile",
        _ => "",
    };
    format!("cannot {what} {}: {err}{hint}", path.display())
}

/// What bind returned, and how to remove the file at the end: only if the file there
/// is still the one this server made (same inode). Someone may have removed ours and
/// started another server on the same path meanwhile; its file is not ours to delete.
struct BoundFile {
    path: PathBuf,
    inode: Option<(u64, u64)>,
    lock: Lock,
}

impl BoundFile {
    fn new(path: &Path, lock: Lock) -> BoundFile {
        let inode = std::fs::symlink_metadata(path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        BoundFile {
            path: path.to_path_buf(),
            inode,
            lock,
        }
    }

    // ANCHOR: remove_file
    /// close(2) does not remove a socket file: the name stays until unlink(2). The
    /// lock file goes last, so that no other server starts on the path before ours
    /// is gone.
    fn remove(self) -> &'static str {
        let now = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        let removed = if now.is_none() {
            "its socket file was already gone"
        } else if now != self.inode {
            "its socket file was replaced by another's: left in place"
        } else {
            match std::fs::remove_file(&self.path) {
                Ok(()) => "socket file removed",
                Err(_) => "its socket file could not be removed",
            }
        };
        self.lock.remove();
        removed
    }
    // ANCHOR_END: remove_file
}

// ---------------------------------------------------------------------------------
// Streams: a thread per connection, as in lesson 06.

/// What the stream server was asked for on the command line.
struct StreamOptions {
    max_threads: usize,
    quiet: bool,
}

fn serve_streams(place: &Place, mode: u32, options: &StreamOptions) {
    // ANCHOR: bind_stream
    // socket(AF_UNIX, SOCK_STREAM) + bind(2) + listen(2): UnixListener::bind does all
    // three (Python: socket(AF_UNIX, SOCK_STREAM); bind(path); listen()).
    let (listener, bound, removed) = match place {
        Place::File(path) => {
            let (listener, bound, removed) =
                bind_with_mode(path, mode, |path| UnixListener::bind(path));
            (listener, Some(bound), removed)
        }
        Place::Abstract(name) => {
            // An abstract address starts with a zero byte in sun_path; the rest is the
            // name. No file is made: no permissions, nothing to remove, and the name
            // goes away with the last socket bound to it.
            let listener = SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| UnixListener::bind_addr(&addr))
                .unwrap_or_else(|err| {
                    exit_with_error(&format!("cannot bind the abstract name @{name}: {err}"))
                });
            (listener, None, None)
        }
    };
    // ANCHOR_END: bind_stream
    // The main thread waits in poll(2) on the listener and on `wake_reader`, to which
    // the registry writes a byte when shutdown begins or a connection leaves.
    let (wake_reader, wake_writer) = UnixStream::pair()
        .and_then(|(reader, writer)| {
            reader.set_nonblocking(true)?;
            writer.set_nonblocking(true)?;
            Ok((reader, writer))
        })
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create a socket pair: {err}")));
    if let Err(err) = listener.set_nonblocking(true) {
        exit_with_error(&format!("cannot make the listener non-blocking: {err}"));
    }
    let connections = LiveConnections::with_waker(wake_writer);
    let for_signal = Arc::clone(&connections);
    signal::on_shutdown(move || for_signal.begin_shutdown())
        .unwrap_or_else(|message| exit_with_error(&message));
    let shown = shown_place(place);
    log!("{} {shown}", log::LISTENING_ON);
    if let Some(removed) = removed {
        log!("{removed}");
    }

    let mut threads = Vec::new();
    accept_loop(
        &listener,
        &wake_reader,
        &connections,
        options,
        &shown,
        &mut threads,
    );
    let cut_off = connections.finish(GRACE);
    for handle in threads {
        let _ = handle.join();
    }
    drop(listener);
    let file = bound.map_or("no file (abstract name)", BoundFile::remove);
    let cut_off = match cut_off {
        0 => String::new(),
        n => format!(", {} cut off", show::count(n, "client")),
    };
    log::last_line(format!(
        "{}: served {}{cut_off}, {file}",
        log::SHUTTING_DOWN,
        show::count(connections.total() as usize, "client")
    ));
}

fn shown_place(place: &Place) -> String {
    match place {
        Place::File(path) => local_path::shown(Some(path), None),
        Place::Abstract(name) => local_path::shown(None, Some(name)),
    }
}

fn accept_loop(
    listener: &UnixListener,
    wake: &UnixStream,
    connections: &Arc<LiveConnections>,
    options: &StreamOptions,
    shown: &str,
    threads: &mut Vec<JoinHandle<()>>,
) {
    let accept_errors = RateLimitedLog::new(Duration::from_secs(1));
    loop {
        // At the bound, do not watch the listener: new clients wait in the backlog.
        let room = connections.live() < options.max_threads;
        let listen_for = if room {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        let mut fds = [
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), listen_for),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => {
                log!("{} poll failed: {err}", log::ERROR);
                return;
            }
        }
        let can_accept = fds[1]
            .revents()
            .is_some_and(|events| events.contains(PollFlags::POLLIN));
        // Drain the wake-ups (a connection left, or Ctrl-C), then look at why.
        let mut drained = [0u8; 64];
        while matches!((&*wake).read(&mut drained), Ok(1..)) {}
        if connections.is_stopping() {
            return;
        }
        if !can_accept {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                threads.retain(|handle| !handle.is_finished());
                spawn_connection(stream, connections, options, shown, threads);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                // EMFILE and the like: say so (not every time), and pause so as not
                // to spin, as lesson 06 does.
                accept_errors.line(format!("{} accept: {err}", log::ERROR));
                thread::sleep(ACCEPT_RETRY_PAUSE);
            }
        }
    }
}

// ANCHOR: peer_credentials
/// Who is at the other end: SO_PEERCRED gives the pid, uid and gid of the process
/// that called connect(2), as the kernel recorded them then (not as they are now: the
/// process may have exited, or passed the socket on). No TCP server can know this:
/// only the kernel at both ends can vouch for it. (Python:
/// `sock.getsockopt(SOL_SOCKET, SO_PEERCRED, struct.calcsize("3i"))`.)
fn peer_text(stream: &UnixStream, shown: &str) -> String {
    match getsockopt(stream, sockopt::PeerCredentials) {
        Ok(credentials) => describe(&credentials, shown),
        Err(err) => format!("(credentials unknown: {err}) -> {shown}"),
    }
}

fn describe(credentials: &UnixCredentials, shown: &str) -> String {
    format!(
        "pid {} uid {} gid {} -> {shown}",
        credentials.pid(),
        credentials.uid(),
        credentials.gid()
    )
}
// ANCHOR_END: peer_credentials

fn spawn_connection(
    stream: UnixStream,
    connections: &Arc<LiveConnections>,
    options: &StreamOptions,
    shown: &str,
    threads: &mut Vec<JoinHandle<()>>,
) {
    let quiet = options.quiet;
    let peer = peer_text(&stream, shown);
    let stream = Arc::new(stream);
    let registered = connections.register_local(Arc::clone(&stream));
    let number = registered.number;
    if !quiet {
        log!(
            "{} {peer} (thread conn-{number}; live {})",
            log::CONNECTED,
            registered.live_now
        );
    }
    let spawned = thread::Builder::new()
        .name(format!("conn-{number}"))
        .spawn(move || serve(&stream, registered, &peer, quiet));
    match spawned {
        Ok(handle) => threads.push(handle),
        Err(err) => log!(
            "{} cannot start a thread for conn-{number}: {err}",
            log::ERROR
        ),
    }
}

fn serve(stream: &UnixStream, registered: Registered, peer: &str, quiet: bool) {
    if let Err(err) = echo(stream, peer, quiet) {
        log!("{} {peer}: {err}", log::ERROR);
    }
    drop(registered);
    if !quiet {
        log!("{} {peer}", log::DISCONNECTED);
    }
}

// ANCHOR: echo
/// Echo, with recvmsg(2) instead of read(2), so that descriptors a client sends along
/// (SCM_RIGHTS) are received. A read that brings one is answered with what the file
/// holds instead of its echo.
fn echo(mut stream: &UnixStream, peer: &str, quiet: bool) -> io::Result<()> {
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        let (n, passed) = receive(stream, &mut buffer)?;
        if n == 0 && passed.is_empty() {
            // The client closed or half-closed, or Ctrl-C ended the input.
            return Ok(());
        }
        let mut passed = passed.into_iter();
        if let Some(fd) = passed.next() {
            // One file per message: any others are closed (dropped) before the reply.
            drop(passed);
            let reply = read_passed_file(fd);
            if !quiet {
                log!("{peer} passed a descriptor: {}", reply.trim_end());
            }
            stream.write_all(reply.as_bytes())?;
            continue;
        }
        if !quiet {
            let data = show::bytes(&buffer[..n]);
            log!(
                "{} {} from {peer}: {data}",
                log::RECEIVED,
                show::count(n, "byte")
            );
        }
        stream.write_all(&buffer[..n])?;
    }
}
// ANCHOR_END: echo

// ANCHOR: receive
/// Room for this many descriptors in one message. A client may send up to 253
/// (SCM_MAX_FD) in one; this server reads one file per message, and gives the rest
/// no room: the kernel then closes the ones that do not fit and sets MSG_CTRUNC.
const ROOM_FOR_FDS: usize = 4;

/// One recvmsg(2): the bytes, and the descriptors that came with them, each now an
/// OwnedFd of this process (closed when dropped). (Python: `socket.recv_fds`, or
/// `recvmsg` and the `SCM_RIGHTS` ancillary data.)
///
/// This is the C interface itself (`struct msghdr`, `CMSG_FIRSTHDR`, `CMSG_NXTHDR`),
/// because of the truncated case: the kernel has then installed the descriptors
/// that fit, and each one must still be taken and closed, or it stays open in this
/// process for ever. (nix's `cmsgs()` refuses to parse a truncated buffer at all,
/// which leaks every descriptor in it.)
fn receive(stream: &UnixStream, buffer: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let space = unsafe { libc::CMSG_SPACE((ROOM_FOR_FDS * size_of::<RawFd>()) as u32) };
    // u64s, so that the buffer is aligned as a `struct cmsghdr` must be.
    let mut control = vec![0u64; (space as usize).div_ceil(8)];
    loop {
        let mut iov = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = space as usize;
        // MSG_CMSG_CLOEXEC: the received descriptors are close-on-exec, as every
        // descriptor std opens is, so a program this server ran would not inherit them.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut header, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let passed = unsafe { take_descriptors(&header) };
        if header.msg_flags & libc::MSG_CTRUNC != 0 {
            // At most a line a second, for all connections: a client can send such
            // messages as fast as it likes.
            static TRUNCATED: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(1));
            TRUNCATED.line(format!(
                "{} more descriptors than room for {ROOM_FOR_FDS}: the kernel closed the \
                 extra ones, and this server closes the {} it got",
                log::ERROR,
                passed.len()
            ));
        }
        return Ok((n as usize, passed));
    }
}

/// Every SCM_RIGHTS descriptor in the control data recvmsg(2) filled in, owned.
///
/// Safety: `header` is the one recvmsg(2) just filled in, and its buffers are alive.
unsafe fn take_descriptors(header: &libc::msghdr) -> Vec<OwnedFd> {
    let mut passed = Vec::new();
    // CMSG_FIRSTHDR/CMSG_NXTHDR stay within msg_controllen, which the kernel set to
    // the length it wrote (also when it truncated).
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(header) };
    while let Some(current) = unsafe { cmsg.as_ref() } {
        if current.cmsg_level == libc::SOL_SOCKET && current.cmsg_type == libc::SCM_RIGHTS {
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            let header_length = data as usize - cmsg as usize;
            let count = (current.cmsg_len - header_length) / size_of::<RawFd>();
            for index in 0..count {
                let fd = unsafe { data.cast::<RawFd>().add(index).read_unaligned() };
                // The kernel has just put `fd` into this process's table; nothing
                // else owns it, so it is ours to own and close.
                passed.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        cmsg = unsafe { libc::CMSG_NXTHDR(header, cmsg) };
    }
    passed
}
// ANCHOR_END: receive

// ANCHOR: read_passed_file
/// The reply to a passed descriptor: `fd: read N bytes of M: "TEXT"` and a newline.
/// Only a regular file is read (a pipe or a socket could block this thread for ever),
/// and at most PASSED_FILE_LIMIT bytes of it. pread(2) (`read_at`) reads from offset
/// 0 without moving the file's offset, which the client shares: both descriptors
/// point to the same open file description.
fn read_passed_file(fd: OwnedFd) -> String {
    let file = File::from(fd);
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(err) => return format!("fd: cannot fstat it: {err}\n"),
    };
    if !meta.is_file() {
        return "fd: not a regular file, not read\n".into();
    }
    let mut data = vec![0u8; PASSED_FILE_LIMIT];
    let mut filled = 0;
    while filled < data.len() {
        match file.read_at(&mut data[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return format!("fd: read failed after {filled} bytes: {err}\n"),
        }
    }
    format!(
        "fd: read {filled} bytes of {}: {}\n",
        meta.len(),
        show::bytes(&data[..filled])
    )
}
// ANCHOR_END: read_passed_file

// ---------------------------------------------------------------------------------
// Datagrams: AF_UNIX (--dgram) and UDP (--udp), one loop for both.

/// The datagram socket a loop serves: the same calls on both, different addresses.
enum DatagramSocket {
    Local(UnixDatagram),
    Udp(UdpSocket),
}

fn serve_datagrams(place: &Place, mode: u32, quiet: bool) {
    // ANCHOR: bind_dgram
    // socket(AF_UNIX, SOCK_DGRAM) + bind(2). (Python: socketserver.UnixDatagramServer.)
    let (socket, bound, removed) = match place {
        Place::File(path) => {
            let (socket, bound, removed) =
                bind_with_mode(path, mode, |path| UnixDatagram::bind(path));
            (socket, Some(bound), removed)
        }
        Place::Abstract(name) => {
            let socket = SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| UnixDatagram::bind_addr(&addr))
                .unwrap_or_else(|err| {
                    exit_with_error(&format!("cannot bind the abstract name @{name}: {err}"))
                });
            (socket, None, None)
        }
    };
    // ANCHOR_END: bind_dgram
    let wakeup = signal::shutdown_wakeup().unwrap_or_else(|message| exit_with_error(&message));
    log!("{} {}", log::LISTENING_ON, shown_place(place));
    if let Some(removed) = removed {
        log!("{removed}");
    }
    let served = datagram_loop(&DatagramSocket::Local(socket), &wakeup, quiet);
    let file = bound.map_or("no file (abstract name)", BoundFile::remove);
    log::last_line(format!(
        "{}: answered {}, {file}",
        log::SHUTTING_DOWN,
        show::count(served, "datagram")
    ));
}

fn serve_udp(args: &Args, quiet: bool) {
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));
    // The seed's UdpServer: socket(AF_INET, SOCK_DGRAM), bind(("", 10000)).
    let socket = UdpSocket::bind(addr)
        .unwrap_or_else(|err| exit_with_error(&workbook::bind_failed(addr, &err)));
    let wakeup = signal::shutdown_wakeup().unwrap_or_else(|message| exit_with_error(&message));
    log::listening(socket.local_addr().unwrap_or(addr));
    let served = datagram_loop(&DatagramSocket::Udp(socket), &wakeup, quiet);
    log::last_line(format!(
        "{}: answered {}",
        log::SHUTTING_DOWN,
        show::count(served, "datagram")
    ));
}

// ANCHOR: datagram_loop
/// Waits in poll(2) for a datagram or Ctrl-C; answers each datagram with `echo:` and
/// the datagram, to the address it came from. The socket is non-blocking: an AF_UNIX
/// datagram send blocks while the receiver's queue is full (a client that sends and
/// never reads), and that must not stop the server; the reply is dropped instead, as
/// UDP would drop it. Returns how many datagrams were answered.
fn datagram_loop(socket: &DatagramSocket, wakeup: &UnixStream, quiet: bool) -> usize {
    let fd = match socket {
        DatagramSocket::Local(socket) => socket.set_nonblocking(true).map(|()| socket.as_fd()),
        DatagramSocket::Udp(socket) => socket.set_nonblocking(true).map(|()| socket.as_fd()),
    };
    let fd = fd.unwrap_or_else(|err| exit_with_error(&format!("cannot set O_NONBLOCK: {err}")));
    // One byte more than the largest datagram answered whole: a datagram that fills
    // it was longer, and recv cut it (the rest of a datagram is discarded).
    let mut buffer = vec![0u8; DATAGRAM_SIZE + 1];
    let errors = DatagramErrors::default();
    let mut answered = 0;
    loop {
        let mut fds = [
            PollFd::new(wakeup.as_fd(), PollFlags::POLLIN),
            PollFd::new(fd, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => {
                log!("{} poll failed: {err}", log::ERROR);
                return answered;
            }
        }
        if fds[0].revents().is_some_and(|events| !events.is_empty()) {
            return answered;
        }
        // Every datagram queued, until the socket says WouldBlock.
        loop {
            let answer = match socket {
                DatagramSocket::Local(socket) => answer_local(socket, &mut buffer, quiet, &errors),
                DatagramSocket::Udp(socket) => answer_udp(socket, &mut buffer, quiet, &errors),
            };
            match answer {
                Ok(true) => answered += 1,
                Ok(false) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => errors
                    .receiving
                    .line(format!("{} recvfrom: {err}", log::ERROR)),
            }
        }
    }
}

/// The datagram server's error lines, each kind at most once a second (with a count
/// of those left out): a flood of datagrams from an unbound sender, or to a client
/// that never reads, must not flood the log too, even with --quiet.
struct DatagramErrors {
    unbound: RateLimitedLog,
    answering: RateLimitedLog,
    receiving: RateLimitedLog,
    cut: RateLimitedLog,
}

impl Default for DatagramErrors {
    fn default() -> DatagramErrors {
        let each = || RateLimitedLog::new(Duration::from_secs(1));
        DatagramErrors {
            unbound: each(),
            answering: each(),
            receiving: each(),
            cut: each(),
        }
    }
}

/// The part of a received datagram that is answered: all of it, or its first
/// DATAGRAM_SIZE bytes if it was longer (said in the log).
fn received<'a>(buffer: &'a [u8], n: usize, who: &str, errors: &DatagramErrors) -> &'a [u8] {
    if n > DATAGRAM_SIZE {
        errors.cut.line(format!(
            "{} {who}: a datagram longer than {DATAGRAM_SIZE} bytes: only its first \
             {DATAGRAM_SIZE} were read and are answered",
            log::ERROR
        ));
        return &buffer[..DATAGRAM_SIZE];
    }
    &buffer[..n]
}

/// The reply to one datagram: `echo:` + the datagram (the seed's protocol).
fn reply_to(datagram: &[u8]) -> Vec<u8> {
    let mut reply = Vec::with_capacity(5 + datagram.len());
    reply.extend_from_slice(b"echo:");
    reply.extend_from_slice(datagram);
    reply
}
// ANCHOR_END: datagram_loop

// ANCHOR: answer_local
/// recvfrom(2) on an AF_UNIX datagram socket. The sender's address is its own bound
/// path, or nothing: a client that did not bind(2) has no address to answer to, and
/// unlike UDP the kernel does not give it one. (Python: `recvfrom` returns `None` then.)
fn answer_local(
    socket: &UnixDatagram,
    buffer: &mut [u8],
    quiet: bool,
    errors: &DatagramErrors,
) -> io::Result<bool> {
    let (n, from) = socket.recv_from(buffer)?;
    let who = local_sender(&from);
    let datagram = received(buffer, n, &who, errors);
    let n = datagram.len();
    if !quiet {
        let data = show::bytes(datagram);
        log!(
            "{} {} from {who}: {data}",
            log::RECEIVED,
            show::count(n, "byte")
        );
    }
    if from.is_unnamed() {
        errors.unbound.line(format!(
            "{} {who}: no address to answer to (the client did not bind)",
            log::ERROR
        ));
        return Ok(false);
    }
    match socket.send_to_addr(&reply_to(datagram), &from) {
        Ok(_) => Ok(true),
        Err(err) => {
            // WouldBlock here is the client's full queue, not ours: log, and go on.
            errors
                .answering
                .line(format!("{} answering {who}: {err}", log::ERROR));
            Ok(false)
        }
    }
}
// ANCHOR_END: answer_local

fn local_sender(from: &SocketAddr) -> String {
    match (from.as_pathname(), from.as_abstract_name()) {
        (Some(path), _) => format!("unix:{}", path.display()),
        (None, Some(name)) => format!("unix:@{}", String::from_utf8_lossy(name)),
        (None, None) => "an unbound client".into(),
    }
}

/// recvfrom(2) on a UDP socket: every sender has an address (the kernel bound its
/// socket to a port when it first sent).
fn answer_udp(
    socket: &UdpSocket,
    buffer: &mut [u8],
    quiet: bool,
    errors: &DatagramErrors,
) -> io::Result<bool> {
    let (n, from) = socket.recv_from(buffer)?;
    let datagram = received(buffer, n, &from.to_string(), errors);
    let n = datagram.len();
    if !quiet {
        let data = show::bytes(datagram);
        log!(
            "{} {} from {from}: {data}",
            log::RECEIVED,
            show::count(n, "byte")
        );
    }
    match socket.send_to(&reply_to(datagram), from) {
        Ok(_) => Ok(true),
        Err(err) => {
            errors
                .answering
                .line(format!("{} answering {from}: {err}", log::ERROR));
            Ok(false)
        }
    }
}
