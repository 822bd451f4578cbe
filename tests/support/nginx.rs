//! A real nginx in front of a gateway, configured with the shipped site file
//! `deploy/nginx.conf`, or in front of several with `deploy/nginx-cluster.conf`.
//!
//! The site file is used as is, except for three values the test must choose: the `listen` port
//! (a free loopback port instead of 80), the upstream `server` (the gateway's port instead of
//! 8080; for the cluster file, one line per node in place of its `server` lines) and, when
//! asked, the `proxy_read_timeout` (so that idle timeouts take seconds). What
//! nginx needs to run unprivileged in a temporary prefix (pid file, logs, temp paths, one
//! process) lives in a small main configuration that includes it, as `nginx.conf` does
//! `conf.d/*.conf` on Debian.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::process::free_port;
use crate::{Endpoint, TIMEOUT};

/// Where Debian's `nginx` package installs the server.
pub const NGINX_BIN: &str = "/usr/sbin/nginx";

/// The shipped site file, `deploy/nginx.conf`.
pub const SITE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nginx.conf");

/// The nginx binary: `$NGINX` if set, else [`NGINX_BIN`]. Panics with what to install when it is
/// missing, so that a machine without nginx fails these tests instead of skipping them.
pub fn nginx_bin() -> PathBuf {
    let path = std::env::var_os("NGINX").map_or_else(|| PathBuf::from(NGINX_BIN), PathBuf::from);
    assert!(
        path.is_file(),
        "nginx not found at {}: install Debian's `nginx` package (apt-get install -y nginx) \
         or set NGINX to the binary; the proxy tests cannot run without it",
        path.display()
    );
    path
}

/// The shipped site file for several nodes, `deploy/nginx-cluster.conf`.
pub const CLUSTER_SITE_FILE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nginx-cluster.conf");

/// The text of `deploy/nginx.conf`.
pub fn site_file() -> String {
    std::fs::read_to_string(SITE_FILE).unwrap_or_else(|e| panic!("cannot read {SITE_FILE}: {e}"))
}

/// The text of `deploy/nginx-cluster.conf`.
pub fn cluster_site_file() -> String {
    std::fs::read_to_string(CLUSTER_SITE_FILE)
        .unwrap_or_else(|e| panic!("cannot read {CLUSTER_SITE_FILE}: {e}"))
}

/// The values of every `directive` in `site` (comments skipped), without the final `;`.
pub fn directive_values(site: &str, directive: &str) -> Vec<String> {
    site.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|code| {
            let mut words = code.split_whitespace();
            (words.next() == Some(directive)).then(|| {
                words
                    .collect::<Vec<_>>()
                    .join(" ")
                    .trim_end_matches(';')
                    .to_owned()
            })
        })
        .collect()
}

/// `site` with its one `listen 80` on `127.0.0.1:listen_port`, its one upstream
/// `server 127.0.0.1:8080` on `upstream_port` and, if given, its one `proxy_read_timeout`
/// set to `read_timeout`. Panics if the file does not have exactly one of each (then this
/// function and the file have drifted apart).
pub fn rewrite_site(
    site: &str,
    listen_port: u16,
    upstream_port: u16,
    read_timeout: Option<Duration>,
) -> String {
    let (mut listens, mut servers, mut timeouts) = (0, 0, 0);
    let mut out = String::with_capacity(site.len());
    for line in site.lines() {
        let code = line.split('#').next().unwrap_or_default();
        let indent = &line[..line.len() - line.trim_start().len()];
        let words: Vec<&str> = code.split_whitespace().collect();
        let rewritten = match words.as_slice() {
            ["listen", port, rest @ ..] if port.trim_end_matches(';') == "80" => {
                listens += 1;
                Some(rewrite_listen(port, rest, listen_port))
            }
            ["server", "127.0.0.1:8080;"] => {
                servers += 1;
                Some(format!("server 127.0.0.1:{upstream_port};"))
            }
            ["proxy_read_timeout", _] => {
                timeouts += 1;
                read_timeout.map(rewrite_read_timeout)
            }
            ["access_log", _path, rest @ ..] => Some(rewrite_access_log(rest)),
            _ => None,
        };
        match rewritten {
            Some(text) => writeln!(out, "{indent}{text}").expect("write to a String"),
            None => writeln!(out, "{line}").expect("write to a String"),
        }
    }
    assert_eq!(
        (listens, servers, timeouts),
        (1, 1, 1),
        "{SITE_FILE} must have exactly one `listen 80 ...;`, one `server 127.0.0.1:8080;` and \
         one `proxy_read_timeout` (listen, server, timeout counts)"
    );
    out
}

/// `site` (the cluster site file) with its one `listen 80` on `127.0.0.1:listen_port`, the
/// `server` lines of its one `upstream` block replaced by one `server 127.0.0.1:PORT` per port
/// of `upstream_ports` (with the parameters the file gives its nodes, `max_fails=…` and the
/// like) and, if given, its one `proxy_read_timeout` set to `read_timeout`. Panics if the file
/// does not have exactly one of each, or gives its nodes different parameters.
pub fn rewrite_cluster_site(
    site: &str,
    listen_port: u16,
    upstream_ports: &[u16],
    read_timeout: Option<Duration>,
) -> String {
    assert!(!upstream_ports.is_empty(), "nginx needs at least one node");
    let (mut listens, mut upstreams, mut timeouts) = (0, 0, 0);
    let mut in_upstream = false;
    let mut node_parameters: Option<Vec<String>> = None;
    let mut out = String::with_capacity(site.len());
    for line in site.lines() {
        let code = line.split('#').next().unwrap_or_default();
        let indent = &line[..line.len() - line.trim_start().len()];
        let words: Vec<&str> = code.split_whitespace().collect();
        match words.as_slice() {
            ["upstream", _, "{"] => {
                upstreams += 1;
                in_upstream = true;
            }
            ["}"] => in_upstream = false,
            _ => {}
        }
        let rewritten = match words.as_slice() {
            ["listen", port, rest @ ..] if port.trim_end_matches(';') == "80" => {
                listens += 1;
                Some(rewrite_listen(port, rest, listen_port))
            }
            ["server", _node, parameters @ ..] if in_upstream => {
                let parameters: Vec<String> = parameters
                    .iter()
                    .map(|p| p.trim_end_matches(';').to_owned())
                    .filter(|p| !p.is_empty())
                    .collect();
                match &node_parameters {
                    // The first node's line: every local node in its place.
                    None => {
                        let mut nodes = String::new();
                        for (n, port) in upstream_ports.iter().enumerate() {
                            let separator = if n == 0 { "" } else { "\n" };
                            let parameters: String =
                                parameters.iter().map(|p| format!(" {p}")).collect();
                            write!(
                                nodes,
                                "{separator}{indent}server 127.0.0.1:{port}{parameters};"
                            )
                            .expect("write to a String");
                        }
                        node_parameters = Some(parameters);
                        writeln!(out, "{nodes}").expect("write to a String");
                        continue;
                    }
                    Some(first) => {
                        assert_eq!(
                            first, &parameters,
                            "{CLUSTER_SITE_FILE}: every node's `server` line should have the \
                             same parameters"
                        );
                        continue;
                    }
                }
            }
            ["proxy_read_timeout", _] => {
                timeouts += 1;
                read_timeout.map(rewrite_read_timeout)
            }
            ["access_log", _path, rest @ ..] => Some(rewrite_access_log(rest)),
            _ => None,
        };
        match rewritten {
            Some(text) => writeln!(out, "{indent}{text}").expect("write to a String"),
            None => writeln!(out, "{line}").expect("write to a String"),
        }
    }
    assert_eq!(
        (listens, upstreams, node_parameters.is_some(), timeouts),
        (1, 1, true, 1),
        "{CLUSTER_SITE_FILE} must have exactly one `listen 80 ...;`, one `upstream NAME {{` with \
         `server` lines and one `proxy_read_timeout` (listen, upstream, servers, timeout)"
    );
    out
}

/// `listen 127.0.0.1:PORT` in place of `listen 80` (`port` is `80` or `80;`, `rest` what follows).
fn rewrite_listen(port: &str, rest: &[&str], listen_port: u16) -> String {
    let rest = if rest.is_empty() {
        String::new()
    } else {
        format!(" {}", rest.join(" "))
    };
    let end = if port.ends_with(';') { ";" } else { "" };
    format!("listen 127.0.0.1:{listen_port}{end}{rest}")
}

/// The site's access log, with the format it gives it, in nginx's prefix (the test's directory:
/// a relative path is relative to it), where [`Nginx::access_log`] reads it.
fn rewrite_access_log(rest: &[&str]) -> String {
    let rest: String = rest.iter().map(|word| format!(" {word}")).collect();
    format!("access_log access.log{rest}")
}

fn rewrite_read_timeout(read_timeout: Duration) -> String {
    format!("proxy_read_timeout {}ms;", read_timeout.as_millis())
}

/// The main configuration around the site file: what a Debian `nginx.conf` provides, in a
/// temporary prefix, plus two settings that make the proxy tests stricter than a stock host.
fn main_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "# Written by tests/support/nginx.rs; the site file is deploy/nginx.conf, rewritten.
daemon off;
# One process, no privilege change: runs as root or as any user, and one kill ends it.
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # Stricter than Debian's defaults, so that the site file must do the work itself: compress
    # event streams unless the site turns gzip off, and ignore the gateway's
    # `X-Accel-Buffering: no`, so that only the site's `proxy_buffering off` turns buffering off.
    gzip on;
    gzip_min_length 1;
    gzip_types text/event-stream application/json;
    proxy_ignore_headers X-Accel-Buffering;
    include {d}/switchboard.conf;
}}
"
    )
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

/// nginx serving `deploy/nginx.conf` on `127.0.0.1:<free port>`, in front of a gateway. It
/// runs in its own temporary prefix and is killed when dropped (its logs are printed if the
/// test is failing).
#[derive(Debug)]
pub struct Nginx {
    addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// nginx in front of the gateway at `upstream`, with the site file's own timeouts.
    pub async fn start(upstream: SocketAddr) -> Nginx {
        Nginx::start_with(upstream, None).await
    }

    /// nginx in front of the gateway at `upstream`, with `proxy_read_timeout` set to
    /// `read_timeout`.
    pub async fn start_with_read_timeout(upstream: SocketAddr, read_timeout: Duration) -> Nginx {
        Nginx::start_with(upstream, Some(read_timeout)).await
    }

    async fn start_with(upstream: SocketAddr, read_timeout: Option<Duration>) -> Nginx {
        let site = site_file();
        Nginx::start_site(|port| rewrite_site(&site, port, upstream.port(), read_timeout)).await
    }

    /// nginx with `deploy/nginx-cluster.conf`, in front of the gateway nodes at `upstreams`, with
    /// the site file's own timeouts.
    pub async fn start_cluster(upstreams: &[SocketAddr]) -> Nginx {
        let site = cluster_site_file();
        let ports: Vec<u16> = upstreams.iter().map(SocketAddr::port).collect();
        Nginx::start_site(|port| rewrite_cluster_site(&site, port, &ports, None)).await
    }

    /// Starts nginx with the site `site_on(port)` listening on a free `port`.
    async fn start_site(site_on: impl Fn(u16) -> String) -> Nginx {
        let bin = nginx_bin();
        // A free port can be taken between probing and nginx binding it: try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "switchboard-nginx-{}-{}",
                std::process::id(),
                STARTED.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            write(&dir.join("switchboard.conf"), &site_on(port));
            write(&dir.join("nginx.conf"), &main_config(&dir));
            let child = Command::new(&bin)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let mut nginx = Nginx {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir,
                child: Some(child),
            };
            match nginx.wait_ready().await {
                Ok(()) => return nginx,
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => panic!("nginx did not start: {e}"),
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    /// Waits until nginx accepts connections on its port, or reports why it exited.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("nginx is running");
            if let Some(status) = child.try_wait().expect("nginx status") {
                self.child = None;
                return Err(format!("nginx exited ({status}):\n{}", self.error_log()));
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > TIMEOUT {
                return Err(format!(
                    "not listening on {} after {TIMEOUT:?}:\n{}",
                    self.addr,
                    self.error_log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// nginx's access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

/// nginx's address: clients go through the proxy.
impl Endpoint for Nginx {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // One process (master_process off): SIGKILL ends all of nginx.
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- nginx error log ({}):\n{}--- nginx access log:\n{}---",
                self.dir.display(),
                self.error_log(),
                self.access_log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
