//! A private, throwaway PostgreSQL cluster for fault tests and the benchmark (which includes
//! this file): made with `initdb` in a temp directory on a free port, restartable and
//! stoppable at will, removed when dropped; and standbys of one, made with
//! `pg_basebackup -R` and streaming from it, promotable. Runs as the `postgres` OS user when run as root
//! (PostgreSQL refuses to run as root). The server's binaries are found, not assumed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The directory of the PostgreSQL server binaries: `PG_BINDIR` when set, else the newest
/// `/usr/lib/postgresql/<major>/bin` that holds `initdb` (Debian's layout), else what
/// `pg_config --bindir` says.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PG_BINDIR") {
            return PathBuf::from(dir);
        }
        let newest = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let major: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((major, bin))
            })
            .max_by_key(|(major, _)| *major);
        if let Some((_, bin)) = newest {
            return bin;
        }
        let out = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .expect("no PostgreSQL server found: set PG_BINDIR");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// A running private cluster.
pub struct TempCluster {
    pub port: u16,
    dir: PathBuf,
    as_postgres: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl TempCluster {
    /// initdb + start, with `max_connections` and durability off (it is thrown away).
    pub fn start(max_connections: u32) -> TempCluster {
        Self::start_tuned(max_connections, "")
    }

    /// As [`TempCluster::start`], with more `postgresql.conf` lines (memory, WAL sizing).
    pub fn start_tuned(max_connections: u32, conf: &str) -> TempCluster {
        Self::start_with(max_connections, "off", None, conf)
    }

    /// As [`TempCluster::start`], serving TLS (as well as plain connections) with the given
    /// PEM certificate and key.
    pub fn start_tls(max_connections: u32, cert_pem: &str, key_pem: &str) -> TempCluster {
        Self::start_with(max_connections, "off", Some((cert_pem, key_pem)), "")
    }

    /// As [`TempCluster::start`], but a commit is acknowledged only once its WAL is written,
    /// so an immediate stop (a crash) loses nothing a client was told had committed.
    /// (fsync stays off: the kernel, which keeps what was written, is not what crashes.)
    pub fn start_durable(max_connections: u32) -> TempCluster {
        Self::start_with(max_connections, "on", None, "")
    }

    /// A hot standby of `primary`: `pg_basebackup -R` (streaming replication from it),
    /// started on a port of its own, durable like [`TempCluster::start_durable`].
    pub fn standby_of(primary: &TempCluster, max_connections: u32) -> TempCluster {
        let c = Self::empty(primary.as_postgres);
        let data = c.data();
        let port = primary.port.to_string();
        c.run(
            "pg_basebackup",
            &[
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "--no-sync",
                "-c",
                "fast",
            ],
        );
        // Later lines win: the copied postgresql.conf names the primary's port and socket.
        c.append_conf(&format!(
            "port = {}\nunix_socket_directories = '{}'\nmax_connections = {max_connections}\nhot_standby = on\n",
            c.port,
            c.dir.display()
        ));
        c.pg_ctl(&["start", "-w", "-t", "30"]);
        c
    }

    /// Promotes a standby to a primary, waiting until it accepts writes.
    pub fn promote(&self) {
        self.pg_ctl(&["promote", "-w", "-t", "30"]);
    }

    /// Appends `postgresql.conf` lines and has the server reload them.
    pub fn reconfigure(&self, conf: &str) {
        self.append_conf(conf);
        self.pg_ctl(&["reload"]);
    }

    /// A direct connection to this cluster.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the temp cluster");
        tokio::spawn(conn);
        client
    }

    /// A directory and a port for a cluster, nothing in it yet.
    fn empty(as_postgres: bool) -> TempCluster {
        let dir = std::env::temp_dir().join(format!(
            "pgsidecar-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres", dir.to_str().unwrap()])
                .status();
            assert!(ok.is_ok_and(|s| s.success()), "chown temp cluster dir");
        }
        TempCluster {
            port: free_port(),
            dir,
            as_postgres,
        }
    }

    fn start_with(
        max_connections: u32,
        synchronous_commit: &str,
        tls: Option<(&str, &str)>,
        extra_conf: &str,
    ) -> TempCluster {
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let c = Self::empty(as_postgres);
        let data = c.data();
        c.run(
            "initdb",
            &[
                "-D",
                &data,
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let conf = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nmax_connections = {max_connections}\nfsync = off\nsynchronous_commit = {synchronous_commit}\nfull_page_writes = off\n",
            c.port,
            c.dir.display()
        );
        c.append_conf(&conf);
        c.append_conf(extra_conf);
        if let Some((cert, key)) = tls {
            c.write_private("server.crt", cert);
            c.write_private("server.key", key);
            c.append_conf("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        c.pg_ctl(&["start", "-w", "-t", "30"]);
        c
    }

    /// A file in the data directory readable only by the server's user, as PostgreSQL
    /// demands of a private key.
    fn write_private(&self, name: &str, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join("data").join(name);
        std::fs::write(&path, text).expect("write server file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        if self.as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres", path.to_str().unwrap()])
                .status();
            assert!(ok.is_ok_and(|s| s.success()), "chown {name}");
        }
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn append_conf(&self, text: &str) {
        use std::io::Write;
        let path = self.dir.join("data").join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open conf");
        f.write_all(text.as_bytes()).expect("write conf");
    }

    /// A PostgreSQL tool, run as the `postgres` user when we are root.
    fn command(&self, bin: &str) -> Command {
        let path = bin_dir().join(bin).display().to_string();
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &path]);
            c
        } else {
            Command::new(&path)
        }
    }

    fn run(&self, bin: &str, args: &[&str]) {
        let out = self
            .command(bin)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run postgres tool");
        assert!(
            out.status.success(),
            "{bin} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data();
        let log = self.dir.join("log").display().to_string();
        let mut all = vec!["-D", &data, "-l", &log];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    /// The connection URL of the cluster.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (connections are cut).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    /// Starts it again after [`TempCluster::stop`].
    pub fn start_again(&self) {
        self.pg_ctl(&["start", "-w", "-t", "30"]);
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "stop", "-m", "immediate"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
