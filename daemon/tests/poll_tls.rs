//! Security L12: the poller's TLS trust. A key server on 127.0.0.1 with a certificate from a
//! private CA (`testdata/tls`) is refused with the compiled-in roots, served with the CA given
//! as `poll.ca_file`; a missing or unusable `poll.ca_file` stops the poller with an error naming
//! the key.

use std::sync::Arc;

use bluezoned::clock::SystemClock;
use bluezoned::config::{Config, TlsRoots};
use bluezoned::poll::{PollReport, Poller};
use bluezoned::service::Shared;
use bluezoned::store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

mod support;
const ZIP2: &str = "google-server-example-2keys";

/// An HTTPS key server on 127.0.0.1 listing one signed sample zip; one request per connection.
async fn start_tls_key_server() -> std::net::SocketAddr {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(support::testdata("tls/server.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(support::testdata("tls/server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let zip = std::fs::read(support::testdata(&format!("gaen/{ZIP2}.zip"))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let zip = zip.clone();
            tokio::spawn(async move {
                // A client that does not trust us ends the handshake: nothing to serve.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let (status, body): (&str, Vec<u8>) = match path {
                    "/keys/index.txt" => ("200 OK", b"2026/a.zip\n".to_vec()),
                    "/keys/2026/a.zip" => ("200 OK", zip),
                    _ => ("404 Not Found", Vec::new()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

fn shared_with(dir: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> Arc<Shared> {
    let mut c = Config::default();
    c.cases.trust = vec![support::testdata(&format!("gaen/{ZIP2}.pub.pem"))];
    tweak(&mut c);
    let (store, _) = Store::init(dir).unwrap();
    Shared::new(store, c, Arc::new(SystemClock))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_only_through_poll_ca_file() {
    let addr = start_tls_key_server().await;
    let url = format!("https://127.0.0.1:{}/keys", addr.port());
    let tmp = tempfile::tempdir().unwrap();

    // The compiled-in roots do not know the private CA: the round fails (the poller's error
    // names the request, not reqwest's cause; the same server succeeds below with the CA).
    let shared = shared_with(&tmp.path().join("a"), |_| {});
    let mut p = Poller::new(shared.clone(), &url)
        .unwrap()
        .without_proxy()
        .unwrap();
    let e = format!("{:#}", p.poll_once().await.unwrap_err());
    assert!(e.contains("index.txt: error sending request"), "{e}");
    assert!(shared.lock_store().case_lists().unwrap().is_empty());

    // With the CA as poll.ca_file (added to the compiled-in roots, or alone): served.
    for roots in [TlsRoots::Builtin, TlsRoots::None] {
        let shared = shared_with(&tmp.path().join(format!("{roots:?}")), |c| {
            c.poll.ca_file = Some(support::testdata("tls/ca.pem"));
            c.poll.tls_roots = roots;
        });
        let mut p = Poller::new(shared.clone(), &url)
            .unwrap()
            .without_proxy()
            .unwrap();
        let r = p.poll_once().await.unwrap();
        assert_eq!(
            r,
            PollReport {
                index_fetched: true,
                listed: 1,
                fetched: 1,
                imported: 1,
                ..PollReport::default()
            },
            "{roots:?}"
        );
        assert_eq!(shared.lock_store().case_lists().unwrap().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_poll_ca_file_is_an_error_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let not_pem = tmp.path().join("not-pem.txt");
    std::fs::write(&not_pem, "just text, no certificate\n").unwrap();
    let garbled = tmp.path().join("garbled.pem");
    std::fs::write(
        &garbled,
        "-----BEGIN CERTIFICATE-----\n!!!!not base64!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = tmp.path().join("missing.pem");
    for (i, (file, what)) in [
        (&missing, "reading"),
        (&not_pem, "holds no certificate"),
        (&garbled, "not a PEM certificate bundle"),
    ]
    .into_iter()
    .enumerate()
    {
        let shared = shared_with(&tmp.path().join(format!("d{i}")), |c| {
            c.poll.ca_file = Some(file.clone());
        });
        let e = Poller::new(shared, "https://127.0.0.1:9/keys").unwrap_err();
        let msg = bluezoned::error_chain(&e);
        assert!(msg.starts_with("poll.ca_file: "), "{msg}");
        assert!(msg.contains(what), "{msg}");
        assert!(msg.contains(&file.display().to_string()), "{msg}");
    }
}
