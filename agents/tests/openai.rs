//! The OpenAI-compatible client against a local HTTP server speaking chat-completions.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use choreo::RetryPolicy;
use choreo_agents::{Message, Model, ModelError, OpenAiConfig, OpenAiModel};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// What the fake server answers, request by request.
#[derive(Clone)]
enum Reply {
    Status(u16, &'static str),
    Hang,
}

/// (request line, lower-cased headers, JSON body)
type Request = (String, Vec<(String, String)>, serde_json::Value);

#[derive(Default)]
struct Seen {
    requests: Vec<Request>,
}

async fn serve(replies: Vec<Reply>) -> Result<(String, Arc<Mutex<Seen>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1", listener.local_addr()?);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (s, replies) = (s.clone(), replies.clone());
            tokio::spawn(async move {
                let (rd, mut wr) = sock.into_split();
                let mut rd = BufReader::new(rd);
                let mut line = String::new();
                if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let target = line.trim_end().to_owned();
                let mut headers = Vec::new();
                let mut len = 0;
                loop {
                    line.clear();
                    if rd.read_line(&mut line).await.unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
                        if k == "content-length" {
                            len = v.parse().unwrap_or(0);
                        }
                        headers.push((k, v));
                    }
                }
                let mut body = vec![0; len];
                if rd.read_exact(&mut body).await.is_err() {
                    return;
                }
                let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                if let Ok(mut s) = s.lock() {
                    s.requests.push((target, headers, json));
                }
                let reply = replies
                    .lock()
                    .ok()
                    .and_then(|mut r| r.pop_front())
                    .unwrap_or(Reply::Status(500, "{}"));
                match reply {
                    Reply::Hang => std::future::pending::<()>().await,
                    Reply::Status(code, body) => {
                        let resp = format!(
                            "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = wr.write_all(resp.as_bytes()).await;
                    }
                }
            });
        }
    });
    Ok((url, seen))
}

const OK: &str = r#"{"id":"c1","model":"local-7b","choices":[{"index":0,"message":{"role":"assistant","content":"1. build\n2. test"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;

fn model(url: String, attempts: u32, timeout: Duration) -> Result<OpenAiModel> {
    Ok(OpenAiModel::new(OpenAiConfig {
        base_url: url,
        model: "local-7b".into(),
        api_key: Some("sk-test".into()),
        timeout,
        retry: RetryPolicy::builder()
            .max_attempts(attempts)
            .initial_delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(20))
            .build()?,
    })?)
}

#[tokio::test]
async fn a_completion_is_requested_and_parsed() -> Result<()> {
    let (url, seen) = serve(vec![Reply::Status(200, OK)]).await?;
    let m = model(url, 3, Duration::from_secs(5))?;
    let c = m
        .complete(&[Message::system("plan"), Message::user("release 1.2")])
        .await?;
    assert_eq!(
        (c.model.as_str(), c.content.as_str()),
        ("local-7b", "1. build\n2. test")
    );
    assert_eq!((c.usage.prompt_tokens, c.usage.completion_tokens), (12, 5));
    let s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let (target, headers, body) = &s.requests[0];
    assert_eq!(target, "POST /v1/chat/completions HTTP/1.1");
    assert!(
        headers.contains(&("authorization".into(), "Bearer sk-test".into())),
        "{headers:?}"
    );
    assert_eq!(body["model"], "local-7b");
    assert_eq!(
        body["messages"],
        serde_json::json!([{"role":"system","content":"plan"},{"role":"user","content":"release 1.2"}])
    );
    Ok(())
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() -> Result<()> {
    let (url, seen) = serve(vec![
        Reply::Status(500, "{}"),
        Reply::Status(429, "{}"),
        Reply::Status(200, OK),
    ])
    .await?;
    let c = model(url, 3, Duration::from_secs(5))?
        .complete(&[Message::user("x")])
        .await?;
    assert_eq!(c.content, "1. build\n2. test");
    assert_eq!(
        seen.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .requests
            .len(),
        3
    );

    let (url, seen) = serve(vec![Reply::Status(401, r#"{"error":"bad key"}"#)]).await?;
    let err = model(url, 3, Duration::from_secs(5))?
        .complete(&[Message::user("x")])
        .await
        .expect_err("401");
    assert!(
        matches!(&err, ModelError::Permanent(m) if m.contains("401") && m.contains("bad key")),
        "{err}"
    );
    assert_eq!(
        seen.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .requests
            .len(),
        1,
        "not retried"
    );

    let (url, _) = serve(vec![Reply::Status(200, r#"{"choices":[]}"#)]).await?;
    let err = model(url, 3, Duration::from_secs(5))?
        .complete(&[Message::user("x")])
        .await
        .expect_err("empty");
    assert!(matches!(err, ModelError::Permanent(_)), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_transiently_after_retries() -> Result<()> {
    let (url, seen) = serve(vec![Reply::Hang, Reply::Hang]).await?;
    let err = model(url, 2, Duration::from_millis(300))?
        .complete(&[Message::user("x")])
        .await
        .expect_err("hangs");
    assert!(
        matches!(&err, ModelError::Transient(m) if m.contains("timed out")),
        "{err}"
    );
    assert_eq!(
        seen.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .requests
            .len(),
        2,
        "two attempts"
    );
    Ok(())
}
