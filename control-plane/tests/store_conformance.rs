//! One conformance suite for the storage layer, run against both backends:
//! SQLite in a temporary directory and a real PostgreSQL cluster (a fresh
//! database per test). On PostgreSQL it also proves the second wall:
//! row-level security hides other tenants' rows from a query that forgot
//! its tenant filter.

use std::collections::BTreeMap;

use control_plane::store::{self, Durability, Piece, SessionWrite, Store, StoreError, SystemStore};
use paddock_protocol::api::SessionState;
use paddock_protocol::{ExitStatus, TermSize};
use paddock_tests::SharedPg;
use sqlx::Row;

const A: &str = "tenant-a";
const B: &str = "tenant-b";

struct Backend {
    store: Store,
    system: SystemStore,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<SharedPg>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let (store, system) = store::open(&store::sqlite_url(dir.path()), Durability::Normal)
        .await
        .unwrap();
    Backend {
        store,
        system,
        _dir: Some(dir),
        _pg: None,
    }
}

async fn postgres() -> Backend {
    let pg = tokio::task::spawn_blocking(paddock_tests::PgCluster::shared)
        .await
        .unwrap()
        .expect("a PostgreSQL cluster for the test");
    let (pg, url) = tokio::task::spawn_blocking(move || {
        let url = pg.fresh_database();
        (pg, url)
    })
    .await
    .unwrap();
    let (store, system) = store::open(&url.unwrap(), Durability::Full).await.unwrap();
    Backend {
        store,
        system,
        _dir: None,
        _pg: Some(pg),
    }
}

async fn with_tenants(backend: &Backend) {
    backend.system.ensure_tenant(A).await.unwrap();
    backend.system.ensure_tenant(B).await.unwrap();
}

async fn sandboxes_are_tenant_scoped(b: Backend) {
    with_tenants(&b).await;
    let labels = BTreeMap::from([("gpu".to_owned(), "no".to_owned())]);
    let (sa, token) = b
        .store
        .create_sandbox(A, "alpha", &labels, None)
        .await
        .unwrap();
    // The same name in another tenant is fine; twice in one tenant is not.
    b.store
        .create_sandbox(B, "alpha", &labels, None)
        .await
        .unwrap();
    assert!(matches!(
        b.store.create_sandbox(A, "alpha", &labels, None).await,
        Err(StoreError::DuplicateName(_))
    ));
    let found = b.store.find_sandbox(A, "alpha").await.unwrap().unwrap();
    assert_eq!(
        (found.id.clone(), found.labels.clone()),
        (sa.id.clone(), labels)
    );
    assert!(b
        .store
        .find_sandbox(B, sa.id.as_str())
        .await
        .unwrap()
        .is_none());
    assert_eq!(b.store.list_sandboxes(A).await.unwrap().len(), 1);
    let authed = b
        .system
        .authenticate_sandbox(&token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((authed.id, authed.tenant_id), (sa.id.clone(), A.to_owned()));
    let rotated = b.store.rotate_sandbox_token(A, &sa.id).await.unwrap();
    assert!(b
        .system
        .authenticate_sandbox(&token)
        .await
        .unwrap()
        .is_none());
    assert!(b
        .system
        .authenticate_sandbox(&rotated)
        .await
        .unwrap()
        .is_some());
    // Another tenant cannot rotate it: its new token opens nothing.
    let other = b.store.rotate_sandbox_token(B, &sa.id).await.unwrap();
    assert!(b
        .system
        .authenticate_sandbox(&other)
        .await
        .unwrap()
        .is_none());
    assert!(b
        .system
        .authenticate_sandbox(&rotated)
        .await
        .unwrap()
        .is_some());
}

async fn sessions_and_output_round_trip(b: Backend) {
    with_tenants(&b).await;
    let (sb, _) = b
        .store
        .create_sandbox(A, "s", &BTreeMap::new(), None)
        .await
        .unwrap();
    let size = TermSize {
        cols: 120,
        rows: 40,
    };
    let s = b
        .store
        .create_session(&sb, Some("sh"), &["-c".into(), "exit 3".into()], size)
        .await
        .unwrap();
    b.store
        .set_session_state(A, s.id, SessionState::Running)
        .await
        .unwrap();
    assert_eq!(
        b.store.unfinished_sessions(A, &sb.id).await.unwrap().len(),
        1
    );
    assert!(b
        .store
        .get_session(B, &sb.id, s.id)
        .await
        .unwrap()
        .is_none());

    let mut write = SessionWrite {
        tenant_id: A.into(),
        session_id: Some(s.id),
        ..SessionWrite::default()
    };
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    write.push_data(0, &data[..200_000]);
    write.push_data(200_000, &data[200_000..]);
    write.push_gap(300_000, 300_010, "disk cap".into());
    write.push_data(300_010, b"tail");
    write.exit = Some(ExitStatus::code(3));
    b.store.write_output(&[write]).await.unwrap();

    let row = b.store.get_session(A, &sb.id, s.id).await.unwrap().unwrap();
    assert_eq!(row.state, SessionState::Exited);
    assert_eq!(row.exit, Some(ExitStatus::code(3)));
    assert_eq!(row.end_offset, 300_014);
    assert_eq!(row.size, size);

    let (bytes, gaps) = read_all(&b, s.id, 1, 300_014, 64 * 1024).await;
    let mut expected = data[1..].to_vec();
    expected.extend_from_slice(b"tail");
    assert!(bytes == expected, "stored output differs");
    assert_eq!(gaps, vec![(300_000, 300_010, "disk cap".to_owned())]);
    // Another tenant reads no byte of it.
    let theirs = b
        .store
        .read_output(B, s.id, 0, 300_014, 1 << 20)
        .await
        .unwrap();
    assert!(theirs.iter().all(|p| matches!(p, Piece::Gap { .. })));
}

/// Bytes no compressor can shrink (xorshift), as binary output would be.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Everything stored for session `s` of tenant A in `[from, to)`, read
/// `max` bytes at a time: the bytes, and the gaps as `(from, to, reason)`.
async fn read_all(
    b: &Backend,
    s: paddock_protocol::SessionId,
    from: u64,
    to: u64,
    max: usize,
) -> (Vec<u8>, Vec<(u64, u64, String)>) {
    let mut cursor = from;
    let mut bytes = Vec::new();
    let mut gaps = Vec::new();
    while cursor < to {
        let pieces = b.store.read_output(A, s, cursor, to, max).await.unwrap();
        assert!(!pieces.is_empty(), "no progress at {cursor}");
        for piece in pieces {
            match piece {
                Piece::Data { offset, data, .. } => {
                    assert_eq!(offset, cursor);
                    bytes.extend_from_slice(&data);
                    cursor += data.len() as u64;
                }
                Piece::Gap { from, to, reason } => {
                    gaps.push((from, to, reason));
                    cursor = to;
                }
            }
        }
    }
    (bytes, gaps)
}

/// Everything stored in `[from, to)` of a stream with no gaps, read in
/// small steps so every read starts inside a chunk.
async fn read_gapless(b: &Backend, s: paddock_protocol::SessionId, from: u64, to: u64) -> Vec<u8> {
    let (bytes, gaps) = read_all(b, s, from, to, 10_000).await;
    assert!(gaps.is_empty(), "unexpected gaps {gaps:?}");
    bytes
}

/// Output is stored compressed when that shrinks it (text), as it is when
/// not (noise), and rows written before compression (`raw_len` NULL) still
/// read back: every range, byte for byte, through both kinds of row.
async fn output_is_stored_compressed_and_reads_back_exactly(b: Backend) {
    with_tenants(&b).await;
    let (sb, _) = b
        .store
        .create_sandbox(A, "s", &BTreeMap::new(), None)
        .await
        .unwrap();
    let s = b
        .store
        .create_session(&sb, Some("sh"), &[], TermSize { cols: 80, rows: 24 })
        .await
        .unwrap();
    let text: Vec<u8> = (0..4000)
        .flat_map(|i| format!("test result {i}: ok, {} passed\r\n", i * 7).into_bytes())
        .collect();
    let legacy = b"an old row, stored before compression\r\n".repeat(40);
    let binary = noise(100_000, 0x9e37_79b9_7f4a_7c15);
    let mut stream = Vec::new();
    stream.extend_from_slice(&text);
    stream.extend_from_slice(&legacy);
    stream.extend_from_slice(&binary);

    let mut write = SessionWrite {
        tenant_id: A.into(),
        session_id: Some(s.id),
        ..SessionWrite::default()
    };
    write.push_data(0, &text);
    b.store.write_output(&[write]).await.unwrap();
    // A row as it was written before the migration: raw, no `raw_len`.
    let mut tx = b.store.begin(A).await.unwrap();
    sqlx::query(
        "INSERT INTO output_chunks (tenant_id, session_id, start, data) VALUES ($1, $2, $3, $4)",
    )
    .bind(A)
    .bind(s.id.0 as i64)
    .bind(text.len() as i64)
    .bind(legacy.as_slice())
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut write = SessionWrite {
        tenant_id: A.into(),
        session_id: Some(s.id),
        ..SessionWrite::default()
    };
    write.push_data((text.len() + legacy.len()) as u64, &binary);
    b.store.write_output(&[write]).await.unwrap();

    let mut tx = b.store.begin(A).await.unwrap();
    let rows = sqlx::query(
        "SELECT start, raw_len, length(data) AS stored FROM output_chunks
         WHERE session_id = $1 ORDER BY start",
    )
    .bind(s.id.0 as i64)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let rows: Vec<(i64, Option<i64>, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("start").unwrap(),
                r.try_get("raw_len").unwrap(),
                r.try_get::<i64, _>("stored").unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 3, "rows: {rows:?}");
    let (_, text_raw, text_stored) = rows[0];
    assert_eq!(
        text_raw,
        Some(text.len() as i64),
        "text is stored compressed"
    );
    assert!(
        text_stored * 4 < text.len() as i64,
        "{} bytes of text stored in {text_stored}",
        text.len()
    );
    assert_eq!(rows[1].1, None);
    assert_eq!(
        rows[2],
        (rows[2].0, None, binary.len() as i64),
        "noise is stored as it is"
    );

    assert!(
        read_gapless(&b, s.id, 0, stream.len() as u64).await == stream,
        "the whole stream differs"
    );
    for from in [
        1,
        4321,
        text.len() as u64 - 1,
        text.len() as u64 + 5,
        stream.len() as u64 - 3,
    ] {
        let got = read_gapless(&b, s.id, from, stream.len() as u64).await;
        assert!(
            got == stream[from as usize..],
            "the stream from {from} differs"
        );
    }
    let timed = b.store.timed_chunks(A, s.id, 0, 10).await.unwrap();
    let replayed: Vec<u8> = timed.into_iter().flat_map(|c| c.data).collect();
    assert!(replayed == stream, "timed chunks differ from the stream");
}

#[tokio::test]
async fn sqlite_output_is_stored_compressed_and_reads_back_exactly() {
    output_is_stored_compressed_and_reads_back_exactly(sqlite().await).await;
}

#[tokio::test]
async fn postgres_output_is_stored_compressed_and_reads_back_exactly() {
    output_is_stored_compressed_and_reads_back_exactly(postgres().await).await;
}

#[tokio::test]
async fn sqlite_sandboxes_are_tenant_scoped() {
    sandboxes_are_tenant_scoped(sqlite().await).await;
}

#[tokio::test]
async fn postgres_sandboxes_are_tenant_scoped() {
    sandboxes_are_tenant_scoped(postgres().await).await;
}

#[tokio::test]
async fn sqlite_sessions_and_output_round_trip() {
    sessions_and_output_round_trip(sqlite().await).await;
}

#[tokio::test]
async fn postgres_sessions_and_output_round_trip() {
    sessions_and_output_round_trip(postgres().await).await;
}

/// The second wall: inside tenant A's transaction, a query with no tenant
/// filter at all sees none of tenant B's rows, in every tenant table.
#[tokio::test]
async fn postgres_row_level_security_hides_other_tenants_rows() {
    let b = postgres().await;
    with_tenants(&b).await;
    let (sa, _) = b
        .store
        .create_sandbox(A, "a1", &BTreeMap::new(), None)
        .await
        .unwrap();
    let (sb, _) = b
        .store
        .create_sandbox(B, "b1", &BTreeMap::new(), None)
        .await
        .unwrap();
    for (tenant, sandbox) in [(A, &sa), (B, &sb)] {
        let s = b
            .store
            .create_session(sandbox, None, &[], TermSize::DEFAULT)
            .await
            .unwrap();
        let mut write = SessionWrite {
            tenant_id: tenant.into(),
            session_id: Some(s.id),
            ..SessionWrite::default()
        };
        write.push_data(0, tenant.as_bytes());
        write.push_gap(10, 20, "x".into());
        b.store.write_output(&[write]).await.unwrap();
    }

    let mut tx = b.store.begin(A).await.unwrap();
    let whoami: String = sqlx::query("SELECT current_user::text AS u")
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .try_get("u")
        .unwrap();
    assert_eq!(whoami, "paddock_app");
    for table in [
        "tenants",
        "sandboxes",
        "sessions",
        "output_chunks",
        "output_gaps",
        "api_tokens",
    ] {
        let column = if table == "tenants" {
            "id"
        } else {
            "tenant_id"
        };
        let rows = sqlx::query(&format!("SELECT {column} AS t FROM {table}"))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        let tenants: Vec<String> = rows.iter().map(|r| r.try_get("t").unwrap()).collect();
        assert!(
            tenants.iter().all(|t| t == A),
            "{table} leaked rows of another tenant: {tenants:?}"
        );
        if table != "api_tokens" {
            assert!(!tenants.is_empty(), "{table} shows tenant A nothing");
        }
    }
    // Writing a row for another tenant is refused too.
    let err = sqlx::query(
        "INSERT INTO sandboxes (id, tenant_id, name, labels, token_hash, created_at)
         VALUES ('sbx_x', $1, 'sneaky', '{}', 'h', 'now')",
    )
    .bind(B)
    .execute(&mut *tx)
    .await;
    assert!(err.is_err(), "RLS let tenant A write a row of tenant B");
    drop(tx);

    // Without a tenant set, the app role sees nothing at all.
    let mut tx = b.store.begin("").await.unwrap();
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM sandboxes")
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(n, 0);
}

/// Retention deletes exactly the output of sessions that ended before the
/// tenant's limit, once, and leaves a gap that says why.
async fn retention_deletes_exactly_what_it_should(b: Backend) {
    with_tenants(&b).await;
    b.system.set_retention(A, Some(1)).await.unwrap();
    let (sa, _) = b
        .store
        .create_sandbox(A, "a", &BTreeMap::new(), None)
        .await
        .unwrap();
    let (sb, _) = b
        .store
        .create_sandbox(B, "b", &BTreeMap::new(), None)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (tenant, sandbox) in [(A, &sa), (A, &sa), (A, &sa), (B, &sb)] {
        let s = b
            .store
            .create_session(sandbox, None, &[], TermSize::DEFAULT)
            .await
            .unwrap();
        let mut write = SessionWrite {
            tenant_id: tenant.into(),
            session_id: Some(s.id),
            ..SessionWrite::default()
        };
        write.push_data(0, b"0123456789");
        b.store.write_output(&[write]).await.unwrap();
        ids.push(s.id);
    }
    // A's first session ended three days ago, its second just now, its third
    // still runs; B's ended three days ago but B keeps output forever.
    b.store
        .finish_session(A, ids[0], Some(ExitStatus::code(0)), 10)
        .await
        .unwrap();
    b.store
        .finish_session(A, ids[1], Some(ExitStatus::code(0)), 10)
        .await
        .unwrap();
    b.store
        .finish_session(B, ids[3], Some(ExitStatus::code(0)), 10)
        .await
        .unwrap();
    let three_days_ago = control_plane_time(3);
    for (tenant, id) in [(A, ids[0]), (B, ids[3])] {
        let mut tx = b.store.begin(tenant).await.unwrap();
        sqlx::query("UPDATE sessions SET ended_at = $1 WHERE id = $2")
            .bind(&three_days_ago)
            .bind(id.0 as i64)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    let purged = b
        .system
        .purge_expired(std::time::SystemTime::now())
        .await
        .unwrap();
    let purged: Vec<_> = purged
        .iter()
        .map(|p| (p.tenant_id.as_str(), p.session_id, p.bytes))
        .collect();
    assert_eq!(purged, vec![(A, ids[0].0 as i64, 10)]);
    // Once only.
    assert!(b
        .system
        .purge_expired(std::time::SystemTime::now())
        .await
        .unwrap()
        .is_empty());

    let pieces = b
        .store
        .read_output(A, ids[0], 0, 10, 1 << 20)
        .await
        .unwrap();
    assert!(
        matches!(&pieces[..], [Piece::Gap { from: 0, to: 10, reason }] if reason.contains("retention")),
        "{pieces:?}"
    );
    for (tenant, id) in [(A, ids[1]), (A, ids[2]), (B, ids[3])] {
        let pieces = b
            .store
            .read_output(tenant, id, 0, 10, 1 << 20)
            .await
            .unwrap();
        assert!(
            matches!(&pieces[..], [Piece::Data { data, .. }] if &data[..] == b"0123456789"),
            "session {id} lost output: {pieces:?}"
        );
    }
}

fn control_plane_time(days_ago: u64) -> String {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(days_ago * 86_400);
    humantime::format_rfc3339_millis(t).to_string()
}

#[tokio::test]
async fn sqlite_retention_deletes_exactly_what_it_should() {
    retention_deletes_exactly_what_it_should(sqlite().await).await;
}

#[tokio::test]
async fn postgres_retention_deletes_exactly_what_it_should() {
    retention_deletes_exactly_what_it_should(postgres().await).await;
}

/// Lifecycle states: conditional transitions, `failed` with its reason,
/// destroy freeing the name and the token, the owner id made once — and
/// another tenant's transitions touch nothing.
async fn lifecycle_states_move_only_from_where_they_may(b: Backend) {
    use paddock_protocol::api::SandboxStatus::*;
    use store::Transition;
    with_tenants(&b).await;
    let owner = b.system.owner_id().await.unwrap();
    assert_eq!(
        b.system.owner_id().await.unwrap(),
        owner,
        "the owner id changed"
    );
    let (hand, _) = b
        .store
        .create_sandbox(A, "hand", &BTreeMap::new(), None)
        .await
        .unwrap();
    assert_eq!((hand.state, hand.provider.clone()), (Disconnected, None));
    let (sb, token) = b
        .store
        .create_provisioned(A, "box", &BTreeMap::new(), "local", "small")
        .await
        .unwrap();
    assert_eq!(sb.state, Provisioning);
    b.store.set_resource_id(A, &sb.id, "res-1").await.unwrap();
    let to_starting = Transition::to(Starting).from(&[Provisioning]);
    assert!(b.store.transition(A, &sb.id, to_starting).await.unwrap());
    assert!(!b.store.transition(A, &sb.id, to_starting).await.unwrap());
    // Another tenant moves nothing.
    assert!(!b
        .store
        .transition(B, &sb.id, Transition::to(Stopped))
        .await
        .unwrap());
    assert!(b
        .store
        .transition(A, &sb.id, Transition::to(Stopped))
        .await
        .unwrap());
    // A late disconnect does not undo a stop.
    let down = Transition::to(Disconnected).from(&[Connected]);
    assert!(!b.store.transition(A, &sb.id, down).await.unwrap());
    assert!(b
        .store
        .transition(A, &sb.id, Transition::failed("gone from the provider"))
        .await
        .unwrap());
    let row = b.store.find_sandbox(A, "box").await.unwrap().unwrap();
    assert_eq!(
        (
            row.state,
            row.state_reason.as_deref(),
            row.resource_id.as_deref(),
            row.size.as_deref()
        ),
        (
            Failed,
            Some("gone from the provider"),
            Some("res-1"),
            Some("small")
        )
    );
    assert_eq!(
        row.to_info(false, None).reason.as_deref(),
        Some("gone from the provider")
    );
    let listed = b.system.provider_sandboxes("local").await.unwrap();
    assert_eq!(
        listed.iter().map(|r| &r.id).collect::<Vec<_>>(),
        vec![&sb.id]
    );

    b.store.destroy_sandbox(A, &sb.id).await.unwrap();
    assert!(b
        .system
        .authenticate_sandbox(&token)
        .await
        .unwrap()
        .is_none());
    assert!(b.store.find_sandbox(A, "box").await.unwrap().is_none());
    let gone = b
        .store
        .find_sandbox(A, sb.id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.state, Destroyed);
    assert_eq!(gone.to_info(true, None).name, "box");
    assert_eq!(gone.to_info(true, None).status, Destroyed);
    assert!(!b
        .store
        .transition(A, &sb.id, Transition::to(Starting))
        .await
        .unwrap());
    assert!(b
        .system
        .provider_sandboxes("local")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(b.store.list_sandboxes(A).await.unwrap().len(), 1);
    // The name is free again.
    b.store
        .create_provisioned(A, "box", &BTreeMap::new(), "local", "small")
        .await
        .unwrap();
}

#[tokio::test]
async fn sqlite_lifecycle_states_move_only_from_where_they_may() {
    lifecycle_states_move_only_from_where_they_may(sqlite().await).await;
}

#[tokio::test]
async fn postgres_lifecycle_states_move_only_from_where_they_may() {
    lifecycle_states_move_only_from_where_they_may(postgres().await).await;
}
