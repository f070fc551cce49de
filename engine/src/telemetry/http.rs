//! A minimal blocking HTTP/1.1 client for the OTLP exporters.
//!
//! The SDK's batch span processor and periodic metric reader export from their own threads,
//! outside any tokio runtime, where hyper-based clients panic; a plain `std::net` client works
//! there and keeps the feature free of hyper, reqwest and TLS stacks. Plain `http://` only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

const MAX_RESPONSE: usize = 4 << 20;

/// Blocking HTTP/1.1 client, one connection per request.
#[derive(Debug, Clone)]
pub(crate) struct StdHttpClient {
    pub(crate) timeout: Duration,
}

impl StdHttpClient {
    fn send_blocking(&self, req: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let uri = req.uri();
        if uri.scheme_str() != Some("http") {
            return Err(format!("only http:// OTLP endpoints are supported, got {uri}").into());
        }
        let host = uri.host().ok_or("OTLP endpoint has no host")?;
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let addr = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or("OTLP endpoint did not resolve")?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        stream.set_nodelay(true)?;
        let mut head = format!(
            "{} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n",
            req.method()
        );
        for (k, v) in req.headers() {
            head.push_str(k.as_str());
            head.push_str(": ");
            head.push_str(v.to_str().unwrap_or(""));
            head.push_str("\r\n");
        }
        let body = req.body();
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()?;
        let mut rd = BufReader::new(stream);
        let mut line = String::new();
        rd.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad HTTP status line: {line:?}"))?;
        let mut builder = Response::builder().status(status);
        let mut content_length: Option<usize> = None;
        loop {
            line.clear();
            if rd.read_line(&mut line)? == 0 {
                break;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    content_length = v.parse().ok();
                }
                builder = builder.header(k.trim(), v);
            }
        }
        let mut body = Vec::new();
        match content_length {
            Some(n) => {
                body.resize(n.min(MAX_RESPONSE), 0);
                rd.read_exact(&mut body)?;
            }
            None => {
                rd.take(MAX_RESPONSE as u64).read_to_end(&mut body)?;
            }
        }
        Ok(builder.body(Bytes::from(body))?)
    }
}

#[async_trait::async_trait]
impl HttpClient for StdHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        self.send_blocking(request)
    }
}
