//! The distributed topology for end-to-end tests: a Kafka-compatible broker
//! (tansu), a private Redis and a private MariaDB — private so a test may
//! stop and restart them without touching the machine's servers — and
//! `colloquy gateway` / `colloquy worker` processes over them.

#![allow(dead_code)] // each test binary uses a different part of this harness

pub use crate::server::free_port;
use crate::server::{root, SECRET, UNLIMITED};
use colloquy_bus::kafka::testing::TestBroker;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for_port(port: u16, what: &str) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} did not listen on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        crate::server::terminate(&mut self.child, &self.what, Duration::from_secs(30))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Redis on a port of its own, nothing kept on disk.
pub struct PrivateRedis {
    pub port: u16,
    proc: Option<Proc>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let mut r = PrivateRedis {
            port: free_port(),
            proc: None,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        self.proc.take();
    }

    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.proc = Some(Proc {
            child,
            what: "redis".into(),
        });
        wait_for_port(self.port, "redis-server");
    }
}

/// MariaDB with its own data directory and port.
pub struct PrivateMariaDb {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl PrivateMariaDb {
    pub fn start(dir: &Path) -> PrivateMariaDb {
        // Once more after a failure, which is reported: the install was
        // seen to fail once in a full suite run, with no output kept.
        let install = || {
            let _ = std::fs::remove_dir_all(dir.join("data"));
            Command::new("mariadb-install-db")
                .args([
                    "--no-defaults",
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                ])
                .arg(format!("--datadir={}", dir.join("data").display()))
                .arg("--skip-test-db")
                .output()
                .expect("mariadb-install-db (apt-get install mariadb-server)")
        };
        let mut out = install();
        if !out.status.success() {
            eprintln!(
                "mariadb-install-db failed ({}), trying once more: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            out = install();
        }
        assert!(
            out.status.success(),
            "mariadb-install-db failed twice ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = PrivateMariaDb {
            port: free_port(),
            dir: dir.to_path_buf(),
            proc: None,
        };
        db.restart();
        let status = Command::new("mariadb")
            .args(["-h127.0.0.1", "-uroot", &format!("-P{}", db.port)])
            .args(["-e", "CREATE DATABASE colloquy"])
            .status()
            .expect("mariadb client");
        assert!(status.success(), "CREATE DATABASE failed");
        db
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/colloquy", self.port)
    }

    /// Like a crash of the database server.
    pub fn kill(&mut self) {
        self.proc.take();
    }

    pub fn restart(&mut self) {
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .args(["--bind-address=127.0.0.1", "--user=root", "--skip-log-bin"])
            .args(["--innodb-buffer-pool-size=64M", "--max-connections=500"])
            .arg(format!("--port={}", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        self.proc = Some(Proc {
            child,
            what: "mariadbd".into(),
        });
        wait_for_port(self.port, "mariadbd");
    }
}

/// Broker, Redis and MariaDB, and the config file the roles share.
pub struct Cluster {
    pub broker: TestBroker,
    pub redis: PrivateRedis,
    pub db: PrivateMariaDb,
    pub data: tempfile::TempDir,
    pub config: PathBuf,
}

impl Cluster {
    pub fn start() -> Cluster {
        let data = tempfile::tempdir().unwrap();
        let broker = TestBroker::start();
        let redis = PrivateRedis::start();
        let db = PrivateMariaDb::start(&data.path().join("mariadb"));
        let config = data.path().join("cluster.toml");
        std::fs::write(
            &config,
            format!(
                r#"[server]
nlu_workers = 1

[bus]
backend = "kafka"
partitions = 8

[bus.kafka]
brokers = ["{broker}"]

[store]
backend = "mysql"

[store.sql]
url = "{db}"

[store.l1]
backend = "redis"

[store.l1.redis]
url = "{redis}"

[cluster]
redis_url = "{redis}"
"#,
                broker = broker.address(),
                db = db.url(),
                redis = redis.url(),
            ),
        )
        .unwrap();
        let c = Cluster {
            broker,
            redis,
            db,
            data,
            config,
        };
        let out = c.command(&["migrate"]).output().expect("colloquy migrate");
        assert!(
            out.status.success(),
            "colloquy migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_colloquy"));
        cmd.current_dir(root())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .arg("--data")
            .arg(self.data.path().join("keys-only"))
            .env("COLLOQUY_JWT_SECRET", SECRET)
            // Every role signs and checks snapshots with the same key.
            .env(
                "COLLOQUY_SNAPSHOT_KEY",
                "cluster-test-snapshot-key-0123456789abcdef",
            )
            .envs(UNLIMITED)
            .env_remove("RUST_LOG");
        cmd
    }

    /// Start a role and wait until it prints a line containing `ready`;
    /// returns the process and that line.
    fn spawn(&self, args: &[&str], ready: &str) -> (Proc, String) {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn colloquy");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut found = None;
        for line in lines.by_ref() {
            let line = line.expect("read stdout");
            if line.contains(ready) {
                found = Some(line);
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let what = args.join(" ");
        let line = found.unwrap_or_else(|| panic!("colloquy {what} exited: {:?}", child.wait()));
        (Proc { child, what }, line)
    }

    /// `colloquy gateway` on a free port; returns it and its address.
    pub fn gateway(&self) -> (Proc, String) {
        let (p, line) = self.spawn(&["gateway", "--listen", "127.0.0.1:0"], " on http://");
        let addr = line.split(" on http://").nth(1).unwrap().trim().to_string();
        (p, addr)
    }

    pub fn worker(&self, id: &str) -> Proc {
        self.worker_with(id, "nlu,policy", &[])
    }

    /// A worker running `stages`, with more arguments (e.g. `--bot DIR`).
    pub fn worker_with(&self, id: &str, stages: &str, args: &[&str]) -> Proc {
        let mut all = vec!["worker", "--stages", stages, "--id", id];
        all.extend_from_slice(args);
        self.spawn(&all, "running").0
    }
}
