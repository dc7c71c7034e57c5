//! Test program: an `enrich` hook that tries to open a TCP connection to
//! 127.0.0.1:5432. It fails the call if it connects, and adds nothing if the
//! sandbox stops it (with an error or, if the host traps the socket imports,
//! a trap).

use std::net::TcpStream;

use consentry_plugin_sdk::{Enrich, Enrichment, Request, export_plugin};

struct SocketOpener;

impl Enrich for SocketOpener {
    fn enrich(_request: Request) -> Result<Enrichment, String> {
        match TcpStream::connect("127.0.0.1:5432") {
            Ok(_) => Err("sandbox breach: connected to 127.0.0.1:5432".to_owned()),
            Err(_) => Ok(Enrichment::new()),
        }
    }
}

export_plugin!(SocketOpener: enrich);
