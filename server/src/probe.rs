//! `gpulab health`: asks a running server whether it is healthy, for the container's
//! HEALTHCHECK. Plain HTTP/1.1 over a `TcpStream`, so that the image needs no `curl` and the
//! check costs a few milliseconds, not a tokio runtime.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

/// The most of the answer that is read: `/api/health` is a few hundred bytes.
const MAX_ANSWER: u64 = 64 * 1024;

/// The address to ask for a server that listens on `listen`: a wildcard address is asked
/// on the loopback address of its family.
pub fn probe_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Asks `GET /api/health` of the server listening on `listen`; returns the answer's body
/// when the server answered 200 with `"status":"ok"`.
pub fn check_health(listen: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    let addr = probe_address(listen);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("no server answers on {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /api/health HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .with_context(|| format!("the server on {addr} did not finish its answer"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .with_context(|| format!("the server on {addr} sent no HTTP answer"))?;
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        bail!("the server on {addr} answered `{status_line}`");
    }
    let health: serde_json::Value = serde_json::from_str(dechunk(body).trim())
        .with_context(|| format!("the server on {addr} sent health that is not JSON"))?;
    if health["status"] != "ok" {
        bail!(
            "the server on {addr} says its status is {}",
            health["status"]
        );
    }
    Ok(health.to_string())
}

/// The body of a chunked answer with one chunk (what axum sends for a small JSON body when
/// it does not know the length), or the body itself.
fn dechunk(body: &str) -> &str {
    let Some((size, rest)) = body.split_once("\r\n") else {
        return body;
    };
    match usize::from_str_radix(size.trim(), 16) {
        Ok(size) if size <= rest.len() => &rest[..size],
        _ => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_are_asked_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(probe_address(v4).to_string(), "127.0.0.1:8080");
        let v6: SocketAddr = "[::]:9000".parse().unwrap();
        assert_eq!(probe_address(v6).to_string(), "[::1]:9000");
        let given: SocketAddr = "10.1.2.3:80".parse().unwrap();
        assert_eq!(probe_address(given), given);
    }

    #[test]
    fn chunked_and_plain_bodies_are_read() {
        assert_eq!(dechunk("a\r\n{\"a\":true}\r\n0\r\n\r\n"), "{\"a\":true}");
        assert_eq!(dechunk("{\"a\":true}"), "{\"a\":true}");
    }

    #[test]
    fn nothing_listening_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = check_health(addr, Duration::from_secs(1)).unwrap_err();
        assert!(error.to_string().contains("no server answers"), "{error:#}");
    }
}
