//! The child process as a supervisor sees it: killed from outside, it is reaped and reported,
//! and it comes back on the same port and data directory.

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use natsd::{NatsServer, ServerOptions};

#[tokio::test]
async fn a_killed_server_is_reaped_and_restarts_on_its_port_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start(ServerOptions::new(dir.path())).await.expect("nats-server starts");
    let (addr, first) = (server.addr(), server.pid().unwrap());
    assert!(TcpStream::connect(addr).is_ok());
    server.restart().await.unwrap();
    assert_eq!(server.pid(), Some(first), "a running server is left as it is");

    #[allow(unsafe_code)]
    // SAFETY: kill(2) on the child this test started, not yet reaped.
    unsafe {
        libc::kill(first as libc::pid_t, libc::SIGKILL);
    }
    let status = tokio::time::timeout(Duration::from_secs(10), server.exited()).await.expect("the death is seen");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    assert_eq!(server.pid(), None, "reaped and forgotten");
    assert!(!Path::new(&format!("/proc/{first}")).exists(), "no zombie is left");

    server.restart().await.expect("nats-server starts again");
    assert_eq!(server.addr(), addr, "on the same port");
    assert_ne!(server.pid(), Some(first));
    assert!(TcpStream::connect(addr).is_ok());
    let second = server.pid().unwrap();
    server.stop_within(Duration::from_secs(5)).await;
    assert!(!Path::new(&format!("/proc/{second}")).exists(), "stopped and reaped");
}
