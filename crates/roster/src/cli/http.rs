//! A minimal HTTP/1.1 GET for the admin port (`roster status --admin`, `roster top`): one request per
//! connection (`Connection: close`), the body read to the end, chunked transfer decoded.
//!
//! Left out: TLS, redirects, keep-alive (the admin port is plain HTTP on a trusted network).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GETs `path` from the admin port at `addr` (HOST:PORT) within `timeout`; the status and the body.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let work = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| {
            format!("cannot connect to the admin port {addr}: {e} (is --admin-addr set there?)")
        })?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        parse(&raw).map_err(|e| format!("{addr}{path}: {e}"))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{addr}{path}: no answer within {timeout:?}"))?
}

/// GETs `path` and decodes its JSON body; a status other than 200 is an error with the body's message.
pub async fn get_json(
    addr: &str,
    path: &str,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let (status, body) = get(addr, path, timeout).await?;
    let value: Result<serde_json::Value, _> = serde_json::from_str(&body);
    match (status, value) {
        (200, Ok(v)) => Ok(v),
        (200, Err(e)) => Err(format!("{addr}{path}: not JSON: {e}")),
        (s, Ok(v)) => Err(format!(
            "{addr}{path}: HTTP {s}: {}",
            v.get("error")
                .and_then(|m| m.as_str())
                .unwrap_or(body.trim())
        )),
        (s, Err(_)) => Err(format!("{addr}{path}: HTTP {s}: {}", body.trim())),
    }
}

/// Splits a whole response into its status and body.
fn parse(raw: &[u8]) -> Result<(u16, String), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no header end")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the header is not text")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("no HTTP status line")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let nl = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line is cut off")?;
        let size_text = std::str::from_utf8(&b[..nl]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("a chunk is cut off".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_bodies_are_read_and_garbage_is_an_error() {
        let (s, b) = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi").unwrap();
        assert_eq!((s, b.as_str()), (200, "hi"));
        let (s, b) = parse(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_str()), (404, "abcde"));
        assert!(parse(b"nonsense").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").is_err());
    }
}
