//! Throwaway network namespaces for rampart's demo and kernel tests. A crate of its
//! own, so that none of it is in the firewall a server runs.
//!
//! A `Sandbox` is a server namespace and N client namespaces, each joined by a veth pair
//! to a bridge in a switch namespace. Addresses come only from 198.18.0.0/15 and
//! 2001:db8::/32. Nothing is created in, or changed in, the caller's own namespace, and
//! everything is removed on drop (also when a test panics).
//!
//! Servers and probes are threads that enter a namespace with `setns`, so a test holds
//! real sockets and can tell an accepted connection from a reset from a silent drop.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

pub mod demo;
pub mod flood;
pub mod nflog;

/// Where a tool is found on PATH (`command -v`), or the bare name.
pub fn real_tool(name: &str) -> String {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| name.to_string())
}

/// Write an executable stand-in `dir/name` with `script`; returns a PATH with `dir`
/// first, for the commands a test runs.
pub fn stand_in(dir: &Path, name: &str, script: &str) -> io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    ))
}

/// A small deterministic generator for tests (no seed files: the same draws every run).
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `0..n`.
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Set this to `required` (as `scripts/test.sh` does) to make kernel tests fail, not
/// skip, where they cannot run.
pub const KERNEL_TESTS_ENV: &str = "RAMPART_KERNEL_TESTS";

/// Why kernel tests cannot run here (not root, or `ip` / `nft` missing), if they cannot.
pub fn kernel_unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("they need root (network namespaces and nftables)".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("'{tool}' is not installed"));
        }
    }
    None
}

/// A sandbox for a kernel test, or None (with a message on stderr) where kernel tests
/// cannot run; with `RAMPART_KERNEL_TESTS=required` that is a failure instead.
pub fn for_test(clients: usize, bin: &Path) -> Option<Sandbox> {
    if let Some(why) = kernel_unavailable() {
        let required = std::env::var(KERNEL_TESTS_ENV).is_ok_and(|v| v == "required");
        assert!(!required, "kernel tests cannot run: {why}");
        // Once per test binary, past the test harness's capture of `eprintln!`.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            let _ = writeln!(
                io::stderr(),
                "skipped: kernel tests cannot run: {why} (scripts/test.sh runs them as root)"
            );
        });
        return None;
    }
    Some(Sandbox::new(clients, bin).expect("build sandbox"))
}

/// The rampart binary a sandbox program runs: its first argument, or the one beside it.
pub fn rampart_bin() -> Result<PathBuf, String> {
    match std::env::args_os().nth(1) {
        Some(path) => Ok(PathBuf::from(path)),
        None => std::env::current_exe()
            .map(|me| me.with_file_name("rampart"))
            .map_err(|e| format!("cannot find the rampart binary: {e}")),
    }
}

/// IPv4 network of the sandbox (inside 198.18.0.0/15).
pub const NET4_PREFIX: [u8; 3] = [198, 18, 0];
/// IPv6 network of the sandbox (inside 2001:db8::/32).
pub const NET6_PREFIX: [u16; 4] = [0x2001, 0xdb8, 0, 0];
/// Host number of the server; clients are 11, 12, …
pub const SERVER_HOST: u8 = 1;
/// Host number of the first client.
pub const FIRST_CLIENT_HOST: u8 = 11;
/// How long a probe waits before calling a connection attempt dropped.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How often server threads look at their stop flag.
const POLL: Duration = Duration::from_millis(50);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One namespace host with its addresses.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name.
    pub ns: String,
    /// IPv4 address.
    pub v4: Ipv4Addr,
    /// IPv6 address.
    pub v6: Ipv6Addr,
}

impl Host {
    fn new(ns: String, host: u8) -> Host {
        let [a, b, c] = NET4_PREFIX;
        let [p0, p1, p2, p3] = NET6_PREFIX;
        Host {
            ns,
            v4: Ipv4Addr::new(a, b, c, host),
            v6: Ipv6Addr::new(p0, p1, p2, p3, 0, 0, 0, u16::from(host)),
        }
    }

    /// The address of one family.
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6)
        } else {
            IpAddr::V4(self.v4)
        }
    }
}

/// How a connection attempt ended.
#[derive(Debug)]
pub enum Conn {
    /// The handshake completed; the stream is held open until dropped.
    Open(TcpStream),
    /// Refused at once (TCP reset, or ICMP port-unreachable).
    Refused,
    /// No answer before the timeout (dropped).
    TimedOut,
    /// Anything else (host unreachable, …).
    Failed(io::ErrorKind),
}

impl Conn {
    /// Whether the connection was accepted.
    pub fn is_open(&self) -> bool {
        matches!(self, Conn::Open(_))
    }
    /// A short word for reports.
    pub fn word(&self) -> &'static str {
        match self {
            Conn::Open(_) => "accepted",
            Conn::Refused => "refused",
            Conn::TimedOut => "timed out",
            Conn::Failed(_) => "failed",
        }
    }
}

/// How a UDP exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Udp {
    /// The server's echo came back.
    Reply,
    /// ICMP port-unreachable came back.
    Refused,
    /// Nothing came back.
    TimedOut,
}

/// A running server thread; stopped on drop.
struct Server {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A server namespace, client namespaces and a switch, removed on drop.
pub struct Sandbox {
    /// The server host (where rampart runs).
    pub srv: Host,
    /// The client hosts.
    pub clients: Vec<Host>,
    /// In a routed sandbox ([`Sandbox::routed`]): the host behind the server, which
    /// then routes between its client and this one.
    pub far: Option<Host>,
    switch: String,
    namespaces: Vec<String>,
    config_dir: PathBuf,
    bin: PathBuf,
    servers: Vec<Server>,
}

/// Run `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Run `f` on a thread inside namespace `ns`; sockets it makes stay in that namespace.
pub fn in_netns<T, F>(ns: &str, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let file = File::open(Path::new("/run/netns").join(ns))?;
    thread::scope(|s| {
        s.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("thread in namespace panicked"))?
    })
}

impl Sandbox {
    /// Build a sandbox with `clients` client namespaces; rampart's binary is `bin`.
    pub fn new(clients: usize, bin: &Path) -> io::Result<Sandbox> {
        let id = format!(
            "rp{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let config_dir = std::env::temp_dir().join(format!("{id}-config"));
        let mut sb = Sandbox {
            srv: Host::new(format!("{id}-srv"), SERVER_HOST),
            clients: (0..clients)
                .map(|i| Host::new(format!("{id}-c{i}"), FIRST_CLIENT_HOST + i as u8))
                .collect(),
            far: None,
            switch: format!("{id}-sw"),
            namespaces: Vec::new(),
            config_dir,
            bin: bin.to_path_buf(),
            servers: Vec::new(),
        };
        sb.build()?;
        Ok(sb)
    }

    /// A router between two links: client 0 (198.18.1.11, 2001:db8:1::11) on the
    /// server's `eth0` (198.18.1.1, 2001:db8:1::1), the far host (198.18.2.22,
    /// 2001:db8:2::22) on its `eth1` (198.18.2.1, 2001:db8:2::1); the server forwards
    /// IPv4 and IPv6, and rampart runs there.
    pub fn routed(bin: &Path) -> io::Result<Sandbox> {
        let id = format!(
            "rp{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let host = |ns: String, net: u8, n: u8| Host {
            ns,
            v4: Ipv4Addr::new(198, 18, net, n),
            v6: Ipv6Addr::new(0x2001, 0xdb8, u16::from(net), 0, 0, 0, 0, u16::from(n)),
        };
        let mut sb = Sandbox {
            srv: host(format!("{id}-srv"), 1, 1),
            clients: vec![host(format!("{id}-c0"), 1, 11)],
            far: Some(host(format!("{id}-far"), 2, 22)),
            switch: format!("{id}-sw"),
            namespaces: Vec::new(),
            config_dir: std::env::temp_dir().join(format!("{id}-config")),
            bin: bin.to_path_buf(),
            servers: Vec::new(),
        };
        let (srv, client) = (sb.srv.clone(), sb.clients[0].clone());
        let far = sb.far.clone().expect("a routed sandbox has a far host");
        for ns in [&srv.ns, &client.ns, &far.ns] {
            ip(&["netns", "add", ns])?;
            sb.namespaces.push(ns.clone());
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // No duplicate address detection, on link-local addresses too: until it
            // ends, neighbour discovery (and so IPv6 routing) waits.
            for key in [
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ] {
                sb.exec(ns, &["sysctl", "-qw", key]);
            }
        }
        let router_far = host(String::new(), 2, 1);
        for (peer, near, far_if) in [(&client, &srv, "eth0"), (&far, &router_far, "eth1")] {
            ip(&[
                "-n", &srv.ns, "link", "add", far_if, "type", "veth", "peer", "name", "eth0",
                "netns", &peer.ns,
            ])?;
            for (ns, dev, h) in [(&srv.ns, far_if, near), (&peer.ns, "eth0", peer)] {
                ip(&["-n", ns, "link", "set", dev, "up"])?;
                ip(&["-n", ns, "addr", "add", &format!("{}/24", h.v4), "dev", dev])?;
                let v6 = format!("{}/64", h.v6);
                ip(&["-n", ns, "addr", "add", &v6, "dev", dev, "nodad"])?;
            }
            let gw = if far_if == "eth0" { near } else { &router_far };
            ip(&[
                "-n",
                &peer.ns,
                "route",
                "add",
                "default",
                "via",
                &gw.v4.to_string(),
            ])?;
            ip(&[
                "-n",
                &peer.ns,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &gw.v6.to_string(),
            ])?;
        }
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            let out = sb.exec(&srv.ns, &["sysctl", "-qw", key]);
            if !out.status.success() {
                return Err(io::Error::other(format!("sysctl {key} failed")));
            }
        }
        std::fs::create_dir_all(&sb.config_dir)?;
        Ok(sb)
    }

    fn build(&mut self) -> io::Result<()> {
        let sw = self.switch.clone();
        ip(&["netns", "add", &sw])?;
        self.namespaces.push(sw.clone());
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        let hosts: Vec<Host> = std::iter::once(self.srv.clone())
            .chain(self.clients.iter().cloned())
            .collect();
        for (i, h) in hosts.iter().enumerate() {
            ip(&["netns", "add", &h.ns])?;
            self.namespaces.push(h.ns.clone());
            let port = format!("p{i}");
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &h.ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &h.ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &h.ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &h.ns,
                "addr",
                "add",
                &format!("{}/24", h.v4),
                "dev",
                "eth0",
            ])?;
            ip(&[
                "-n",
                &h.ns,
                "addr",
                "add",
                &format!("{}/64", h.v6),
                "dev",
                "eth0",
                "nodad",
            ])?;
        }
        std::fs::create_dir_all(&self.config_dir)?;
        Ok(())
    }

    /// The config directory rampart uses in this sandbox.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// Run rampart inside the server namespace with this sandbox's config dir.
    pub fn rampart(&self, args: &[&str]) -> Output {
        self.rampart_command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run rampart")
    }

    /// The command that runs rampart inside the server namespace with this sandbox's
    /// config dir (to add environment, pipes, or to spawn and kill it). `ip netns exec`
    /// execs rampart itself, so the child's pid is rampart's.
    pub fn rampart_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.srv.ns])
            .arg(&self.bin)
            .arg("--config-dir")
            .arg(&self.config_dir)
            .args(args)
            // The session the tests run in (maybe over SSH) is not the sandbox's.
            .env_remove("SSH_CONNECTION");
        cmd
    }

    /// The rampart binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// A further empty namespace (loopback up), removed with the sandbox: somewhere
    /// to load a reference ruleset beside the server's.
    pub fn spare_ns(&mut self) -> io::Result<String> {
        let ns = format!("{}-x{}", self.switch, self.namespaces.len());
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// rampart's table in a namespace as nft JSON, normalized for comparison: no
    /// handles, set and map elements sorted, no elements of limit state sets and no
    /// counter values (their contents are traffic, not policy). Null when the table is
    /// not loaded.
    pub fn table_json(&self, ns: &str) -> serde_json::Value {
        let out = self.exec(ns, &["nft", "-j", "list", "table", "inet", "rampart"]);
        if !out.status.success() {
            return serde_json::Value::Null;
        }
        let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft lists JSON");
        normalize(&mut v);
        // Objects by kind and name (a kept state set keeps its old place in the
        // listing); rules stay in order within their chain (the sort is stable).
        if let Some(items) = v
            .get_mut("nftables")
            .and_then(serde_json::Value::as_array_mut)
        {
            items.sort_by_key(|item| {
                let (kind, obj) = item
                    .as_object()
                    .and_then(|o| o.iter().next())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .unwrap_or_default();
                let name = obj
                    .get(if kind == "rule" { "chain" } else { "name" })
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                (kind, name)
            });
        }
        v
    }

    /// The table a full apply of this sandbox's policy file makes in namespace `ns`,
    /// from a config dir of its own (`dir`, made afresh), as [`Sandbox::table_json`]
    /// gives it: what the server's kernel should hold.
    pub fn full_apply_table(&self, ns: &str, dir: &Path) -> serde_json::Value {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("make the reference config dir");
        std::fs::copy(self.config_dir.join("policy.toml"), dir.join("policy.toml"))
            .expect("copy the policy file");
        let out = self.exec(
            ns,
            &[
                self.bin.to_str().expect("a UTF-8 path"),
                "--config-dir",
                dir.to_str().expect("a UTF-8 path"),
                "reload",
            ],
        );
        assert!(
            out.status.success(),
            "the reference reload failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.table_json(ns)
    }

    /// Run rampart and insist it succeeds; returns stdout.
    pub fn rampart_ok(&self, args: &[&str]) -> String {
        let out = self.rampart(args);
        assert!(
            out.status.success(),
            "rampart {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run any command inside a namespace; returns its output.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run command in namespace")
    }

    /// The server namespace's whole nft ruleset, as text.
    pub fn ruleset(&self) -> String {
        String::from_utf8_lossy(&self.exec(&self.srv.ns, &["nft", "list", "ruleset"]).stdout)
            .into_owned()
    }

    /// Start a TCP server on `port` (IPv4 and IPv6) in the server namespace. Accepted
    /// connections echo what they read and are held until the client closes them.
    pub fn serve_tcp(&mut self, port: u16) -> io::Result<()> {
        let ns = self.srv.ns.clone();
        self.serve_tcp_in(&ns, port)
    }

    /// As [`Sandbox::serve_tcp`], in another namespace of the sandbox.
    pub fn serve_tcp_in(&mut self, ns: &str, port: u16) -> io::Result<()> {
        let listener = in_netns(ns, move || {
            TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
        })??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let flag = flag.clone();
                        conns.push(thread::spawn(move || echo(stream, &flag)));
                    }
                    Err(_) => thread::sleep(POLL),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        self.servers.push(Server {
            stop,
            handle: Some(handle),
        });
        Ok(())
    }

    /// Start a UDP echo server on `port` (IPv4 and IPv6) in the server namespace.
    pub fn serve_udp(&mut self, port: u16) -> io::Result<()> {
        let sock = in_netns(&self.srv.ns, move || {
            UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
        })??;
        sock.set_read_timeout(Some(POLL))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::SeqCst) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
        });
        self.servers.push(Server {
            stop,
            handle: Some(handle),
        });
        Ok(())
    }

    /// Open a TCP connection from client `c` to the server's address of one family.
    pub fn tcp(&self, c: usize, v6: bool, port: u16) -> Conn {
        self.tcp_timeout(c, v6, port, DEFAULT_TIMEOUT)
    }

    /// Open `n` connections from client `c` one after another (each closed at once);
    /// count the outcomes: (accepted, refused, anything else).
    pub fn burst(&self, c: usize, v6: bool, port: u16, n: usize) -> (usize, usize, usize) {
        let (mut open, mut refused, mut other) = (0, 0, 0);
        for _ in 0..n {
            match self.tcp(c, v6, port) {
                Conn::Open(_) => open += 1,
                Conn::Refused => refused += 1,
                _ => other += 1,
            }
        }
        (open, refused, other)
    }

    /// As [`Sandbox::tcp`], with a timeout.
    pub fn tcp_timeout(&self, c: usize, v6: bool, port: u16, timeout: Duration) -> Conn {
        self.tcp_to(c, SocketAddr::new(self.srv.addr(v6), port), timeout)
    }

    /// Open a TCP connection from client `c` to any address.
    pub fn tcp_to(&self, c: usize, dst: SocketAddr, timeout: Duration) -> Conn {
        self.tcp_in(&self.clients[c].ns.clone(), dst, timeout)
    }

    /// Open a TCP connection from any namespace of the sandbox (the server's own, to
    /// its loopback, say).
    pub fn tcp_in(&self, ns: &str, dst: SocketAddr, timeout: Duration) -> Conn {
        in_netns(ns, move || {
            match TcpStream::connect_timeout(&dst, timeout) {
                Ok(s) => Conn::Open(s),
                Err(e) => match e.kind() {
                    io::ErrorKind::ConnectionRefused => Conn::Refused,
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Conn::TimedOut,
                    k => Conn::Failed(k),
                },
            }
        })
        .unwrap_or(Conn::Failed(io::ErrorKind::Other))
    }

    /// Send one datagram from client `c` to the server and wait for the echo.
    pub fn udp(&self, c: usize, v6: bool, port: u16) -> Udp {
        self.udp_from(c, v6, port, 0)
    }

    /// As [`Sandbox::udp`], from a chosen source port (0: any).
    pub fn udp_from(&self, c: usize, v6: bool, port: u16, sport: u16) -> Udp {
        self.udp_timeout(c, v6, port, sport, DEFAULT_TIMEOUT)
    }

    /// As [`Sandbox::udp_from`], with a timeout.
    pub fn udp_timeout(&self, c: usize, v6: bool, port: u16, sport: u16, timeout: Duration) -> Udp {
        let dst = SocketAddr::new(self.srv.addr(v6), port);
        let bind: SocketAddr = if v6 {
            (Ipv6Addr::UNSPECIFIED, sport).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, sport).into()
        };
        in_netns(&self.clients[c].ns, move || {
            let sock = UdpSocket::bind(bind)?;
            sock.connect(dst)?;
            sock.set_read_timeout(Some(timeout))?;
            sock.send(b"ping")?;
            let mut buf = [0u8; 64];
            sock.recv(&mut buf).map(|_| ())
        })
        .map(|r| match r {
            Ok(()) => Udp::Reply,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Udp::Refused,
            Err(_) => Udp::TimedOut,
        })
        .unwrap_or(Udp::TimedOut)
    }
}

/// Strip what differs between equal tables: handles, metainfo, element order, the
/// elements of limit state sets, and stamps but the current one.
fn normalize(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            map.remove("handle");
            map.remove("metainfo");
            // What counters counted is traffic, not the table.
            if let Some(Value::Object(c)) = map.get_mut("counter") {
                for v in c.values_mut() {
                    *v = Value::from(0);
                }
            }
            let name = map
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if name.starts_with("state_") {
                map.remove("elem");
            }
            // rampart's stamps: only the current one (the highest sequence number, in
            // the key's high bits) says what the table holds.
            if name == "stamp" {
                let current = map
                    .get("elem")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        let key = e["elem"]["val"].as_str()?.parse::<Ipv6Addr>().ok()?;
                        Some((u128::from(key) >> 64, e["elem"]["comment"].clone()))
                    })
                    .max_by_key(|(seq, _)| *seq)
                    .map(|(_, comment)| comment);
                map.insert(
                    "elem".into(),
                    Value::from(current.into_iter().collect::<Vec<_>>()),
                );
            }
            for child in map.values_mut() {
                normalize(child);
            }
            if let Some(Value::Array(elems)) = map.get_mut("elem") {
                elems.sort_by_key(|e| e.to_string());
            }
        }
        Value::Array(items) => {
            items.iter_mut().for_each(normalize);
            items.retain(|i| !i.as_object().is_some_and(|o| o.is_empty()));
        }
        _ => {}
    }
}

impl Sandbox {
    /// Send, from client `c` over IPv4, a bare TCP ACK to the server's `port` that
    /// belongs to no connection (a raw socket; the kernel adds the IP header).
    pub fn send_stray_ack(&self, c: usize, port: u16) -> io::Result<()> {
        use nix::sys::socket::{
            sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn,
        };
        let (src, dst) = (self.clients[c].v4, self.srv.v4);
        in_netns(&self.clients[c].ns, move || {
            let fd = socket(
                AddressFamily::Inet,
                SockType::Raw,
                SockFlag::empty(),
                SockProtocol::Tcp,
            )?;
            let segment = tcp_ack(src, dst, 40_000, port);
            let to = SockaddrIn::from(std::net::SocketAddrV4::new(dst, 0));
            sendto(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &segment,
                &to,
                MsgFlags::empty(),
            )?;
            Ok::<_, nix::Error>(())
        })?
        .map_err(io::Error::from)
    }

    /// TCP resets the server's own stack has sent (its `/proc/net/snmp` OutRsts).
    pub fn server_tcp_resets(&self) -> u64 {
        let out = self.exec(&self.srv.ns, &["cat", "/proc/net/snmp"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
        let (names, values) = (tcp.next().unwrap_or(""), tcp.next().unwrap_or(""));
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "OutRsts")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    }
}

/// A 20-byte TCP header with only ACK set, its checksum over the IPv4 pseudo-header.
fn tcp_ack(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&1u32.to_be_bytes()); // sequence number
    h[8..12].copy_from_slice(&1u32.to_be_bytes()); // acknowledgement number
    h[12] = 5 << 4; // data offset: 5 words
    h[13] = 0x10; // ACK
    h[14..16].copy_from_slice(&64_240u16.to_be_bytes()); // window
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for pair in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, 6]); // protocol TCP
    add(&20u16.to_be_bytes());
    add(&h);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    h
}

/// Echo what arrives until the peer closes or the server stops.
fn echo(mut stream: TcpStream, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Whether a held connection still carries data both ways.
pub fn still_works(stream: &mut TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(DEFAULT_TIMEOUT));
    let mut buf = [0u8; 4];
    stream.write_all(b"ping").is_ok() && stream.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.servers.clear();
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.config_dir);
    }
}
