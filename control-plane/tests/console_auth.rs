//! The console's sign-in over plain HTTP: an API token exchanged for an
//! HttpOnly, SameSite=Strict cookie; state-changing requests with the cookie
//! need the CSRF token; WebSocket upgrades with it must come from this
//! origin; `?token=` links redirect at once; logout ends the session.

mod support;

use serde_json::json;
use support::{call, start, OWNER};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_cookies_need_csrf_and_same_origin_and_end_at_logout() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let url = start(dir.path(), None, &shutdown).await;
    let http = reqwest::Client::new();

    // Another site's page cannot sign a browser in.
    let resp = http
        .post(format!("{url}/v1/console/session"))
        .header("origin", "https://evil.example")
        .json(&json!({ "token": OWNER }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("set-cookie").is_none());

    // A wrong token gets no cookie.
    let resp = http
        .post(format!("{url}/v1/console/session"))
        .json(&json!({ "token": "pdk_wrong" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("set-cookie").is_none());

    let resp = http
        .post(format!("{url}/v1/console/session"))
        .json(&json!({ "token": OWNER }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let body: serde_json::Value = resp.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(body["role"], "owner");

    // Reads work with the cookie alone; the CSRF token comes back on reload.
    let resp = http
        .get(format!("{url}/v1/console/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let again: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(again["csrf_token"], csrf.as_str());

    // A state-changing request needs the CSRF token.
    let create = |csrf: Option<&str>| {
        let mut req = http
            .post(format!("{url}/v1/agents"))
            .header("cookie", &cookie)
            .json(&json!({ "name": "made-by-cookie" }));
        if let Some(csrf) = csrf {
            req = req.header("x-paddock-csrf", csrf);
        }
        req.send()
    };
    let refused = create(None).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("CSRF"));
    assert_eq!(create(Some("0000")).await.unwrap().status(), 403);
    assert_eq!(create(Some(&csrf)).await.unwrap().status(), 201);
    let (_, agents) = call(&http, &url, reqwest::Method::GET, "/v1/agents", None).await;
    assert_eq!(
        agents["agents"].as_array().map(Vec::len),
        Some(1),
        "{agents}"
    );

    // WebSocket upgrades with the cookie must come from this origin.
    let upgrade = |origin: &'static str| {
        let mut request = format!("{}/v1/events", url.replacen("http", "ws", 1))
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("cookie", cookie.parse().unwrap());
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    match upgrade("https://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!(
            "a cross-origin upgrade was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    let same = format!("http://{}", url.trim_start_matches("http://"));
    let same: &'static str = Box::leak(same.into_boxed_str());
    let (ws, _) = upgrade(same).await.expect("a same-origin upgrade works");
    drop(ws);

    // A `?token=` link sets the cookie and redirects to a URL without it.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirect
        .get(format!("{url}/console?token={OWNER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/console");
    assert!(resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("HttpOnly"));
    let resp = no_redirect
        .get(format!("{url}/console?token=pdk_wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert!(resp.headers().get("set-cookie").is_none());

    // Logout deletes the session: the same cookie is refused afterwards.
    let resp = http
        .delete(format!("{url}/v1/console/session"))
        .header("cookie", &cookie)
        .header("x-paddock-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = http
        .get(format!("{url}/v1/whoami"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    shutdown.cancel();
}
