//! The `http` server: a minimal HTTP/1.x responder that answers every request
//! with `200 hello from HOSTNAME`. Keep-alive and pipelining work; request
//! bodies are read and discarded (chunked ones by closing after the answer).

use std::io::{self, BufRead, BufReader, Read, Write};

use super::conn::Conn;

/// Largest request line plus headers we accept; more gets a 431.
const MAX_HEAD: usize = 16 * 1024;

/// What we need to know about a request to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// `HEAD`: answer without a body.
    pub head_only: bool,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
    pub body: Body,
}

/// The request body that follows the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Empty,
    Length(u64),
    /// Not decoded: we answer, then close.
    Chunked,
}

/// A request we answer with an error and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// 400, with the reason in the body.
    Malformed(&'static str),
    /// 431: the head is longer than [`MAX_HEAD`].
    HeadTooLarge,
}

/// Serves requests on one connection until the client closes or asks to.
pub fn serve(conn: &mut Conn, hostname: &str) -> io::Result<()> {
    let body = format!("hello from {hostname}\n");
    let mut reader = BufReader::new(conn);
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        let request = match head.and_then(|head| parse_head(&head)) {
            Ok(request) => request,
            Err(reject) => {
                let conn = reader.into_inner();
                conn.write_all(&reject_response(reject))?;
                return conn.finish();
            }
        };
        if let Body::Length(len) = request.body {
            let read = io::copy(&mut (&mut reader).take(len), &mut io::sink())?;
            if read < len {
                return Ok(()); // The client went away mid-body.
            }
        }
        let conn = reader.get_mut();
        conn.write_all(&response(
            200,
            "OK",
            &body,
            request.keep_alive,
            request.head_only,
        ))?;
        if !request.keep_alive {
            return conn.finish();
        }
    }
}

/// Reads one request head (up to the blank line). `None` on a clean EOF
/// between requests or a client that left mid-head.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Result<Vec<u8>, Reject>>> {
    let mut head = Vec::new();
    loop {
        let room = (MAX_HEAD + 1).saturating_sub(head.len()) as u64;
        let start = head.len();
        let n = reader.take(room).read_until(b'\n', &mut head)?;
        let line = &head[start..];
        if n == 0 || !line.ends_with(b"\n") {
            if head.len() > MAX_HEAD {
                return Ok(Some(Err(Reject::HeadTooLarge)));
            }
            return Ok(None);
        }
        if line == b"\r\n" || line == b"\n" {
            if start == 0 {
                head.clear(); // Blank lines before a request are ignored.
                continue;
            }
            return Ok(Some(Ok(head)));
        }
    }
}

/// Parses a request head into what answering it needs.
pub fn parse_head(head: &[u8]) -> Result<RequestHead, Reject> {
    let text = std::str::from_utf8(head).map_err(|_| Reject::Malformed("head is not UTF-8"))?;
    let mut lines = text.lines();
    let request_line = lines.next().ok_or(Reject::Malformed("empty request"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(_target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reject::Malformed(
            "request line is not `METHOD TARGET VERSION`",
        ));
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(Reject::Malformed("only HTTP/1.0 and HTTP/1.1 are served")),
    };
    let (mut close, mut keep_alive, mut chunked) = (false, false, false);
    let mut length: Option<u64> = None;
    for line in lines.take_while(|line| !line.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Reject::Malformed("header line without `:`"));
        };
        if name.is_empty() || name.starts_with([' ', '\t']) {
            return Err(Reject::Malformed("bad header name"));
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked |= value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            let len = value
                .parse()
                .map_err(|_| Reject::Malformed("bad Content-Length"))?;
            if length.is_some_and(|previous| previous != len) {
                return Err(Reject::Malformed("conflicting Content-Length headers"));
            }
            length = Some(len);
        }
    }
    let body = match (chunked, length) {
        (true, _) => Body::Chunked,
        (false, Some(len)) => Body::Length(len),
        (false, None) => Body::Empty,
    };
    let keep_alive = !close && (http11 || keep_alive) && body != Body::Chunked;
    Ok(RequestHead {
        head_only: method == "HEAD",
        keep_alive,
        body,
    })
}

fn reject_response(reject: Reject) -> Vec<u8> {
    match reject {
        Reject::Malformed(reason) => response(
            400,
            "Bad Request",
            &format!("bad request: {reason}\n"),
            false,
            false,
        ),
        Reject::HeadTooLarge => response(
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
            false,
            false,
        ),
    }
}

fn response(status: u16, reason: &str, body: &str, keep_alive: bool, head_only: bool) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;

    use super::super::args::ServerMode;
    use super::super::server::test_support::{HOSTNAME, connect, start};
    use super::*;

    fn parse(head: &str) -> Result<RequestHead, Reject> {
        parse_head(head.as_bytes())
    }

    #[test]
    fn http11_keeps_alive_unless_told_to_close() {
        let get = parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            get,
            RequestHead {
                head_only: false,
                keep_alive: true,
                body: Body::Empty
            }
        );
        let close = parse("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap();
        assert!(!close.keep_alive);
    }

    #[test]
    fn http10_closes_unless_asked_to_keep_alive() {
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            parse("GET / HTTP/1.0\nconnection: keep-alive\n\n")
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn bodies_and_head() {
        let post = parse("POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(post.body, Body::Length(5));
        let chunked = parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(chunked.body, Body::Chunked);
        assert!(!chunked.keep_alive);
        assert!(parse("HEAD / HTTP/1.1\r\n\r\n").unwrap().head_only);
    }

    #[test]
    fn malformed_heads_are_rejected() {
        for head in [
            "",
            "GET /\r\n\r\n",
            "GET / HTTP/2\r\n\r\n",
            "GET / HTTP/1.1 extra\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert!(matches!(parse(head), Err(Reject::Malformed(_))), "{head:?}");
        }
        assert!(parse_head(b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n").is_err());
    }

    /// Reads one response; returns its status line and body.
    fn read_response(reader: &mut BufReader<TcpStream>) -> (String, String) {
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.strip_prefix("Content-Length: ") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        (
            status.trim_end().to_owned(),
            String::from_utf8(body).unwrap(),
        )
    }

    #[test]
    fn serves_keep_alive_pipelined_and_close() {
        let addr = start(ServerMode::Http);
        let mut client = connect(addr);
        let mut reader = BufReader::new(client.try_clone().unwrap());
        let hello = format!("hello from {HOSTNAME}\n");

        client
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(
            read_response(&mut reader),
            ("HTTP/1.1 200 OK".into(), hello.clone())
        );

        // A body, then a pipelined request, both in one write.
        client
            .write_all(b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut reader).1, hello);
        assert_eq!(read_response(&mut reader).1, hello);

        client
            .write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut reader).1, hello);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert!(
            rest.is_empty(),
            "connection stays open after Connection: close"
        );
    }

    #[test]
    fn answers_garbage_with_400_and_closes() {
        let addr = start(ServerMode::Http);
        let mut client = connect(addr);
        client.write_all(b"\x00\x01 garbage\r\n\r\n").unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
    }

    #[test]
    fn answers_huge_head_with_431() {
        let addr = start(ServerMode::Http);
        let mut client = connect(addr);
        let mut request = b"GET / HTTP/1.1\r\nX: ".to_vec();
        request.resize(MAX_HEAD + 100, b'a');
        client.write_all(&request).unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    }
}
