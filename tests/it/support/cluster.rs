//! A private, throwaway PostgreSQL cluster for fault tests: made with `initdb` in a temp
//! directory on a free port, restartable and stoppable at will, removed when dropped. Runs as
//! the `postgres` OS user when the tests run as root (PostgreSQL refuses to run as root).

use std::path::PathBuf;
use std::process::{Command, Stdio};

const BIN: &str = "/usr/lib/postgresql/15/bin";

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
        Self::start_with(max_connections, "off", None)
    }

    /// As [`TempCluster::start`], serving TLS (as well as plain connections) with the given
    /// PEM certificate and key.
    pub fn start_tls(max_connections: u32, cert_pem: &str, key_pem: &str) -> TempCluster {
        Self::start_with(max_connections, "off", Some((cert_pem, key_pem)))
    }

    /// As [`TempCluster::start`], but a commit is acknowledged only once its WAL is written,
    /// so an immediate stop (a crash) loses nothing a client was told had committed.
    /// (fsync stays off: the kernel, which keeps what was written, is not what crashes.)
    pub fn start_durable(max_connections: u32) -> TempCluster {
        Self::start_with(max_connections, "on", None)
    }

    fn start_with(
        max_connections: u32,
        synchronous_commit: &str,
        tls: Option<(&str, &str)>,
    ) -> TempCluster {
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
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
        let c = TempCluster {
            port: free_port(),
            dir,
            as_postgres,
        };
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
        let path = format!("{BIN}/{bin}");
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
