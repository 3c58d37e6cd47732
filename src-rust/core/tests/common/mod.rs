//! Helpers shared by the integration tests that start servers of their own.

use std::net::TcpListener;

/// A loopback port free at the time of asking. Tests run in parallel: two may be given the same
/// one, so a server started on it must check that the server answering there is its own.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
