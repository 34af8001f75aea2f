//! StreamQuery against real PostgreSQL: a million rows in bounded chunks with the sidecar's
//! memory bounded, a slow reader pacing the query, cancellation reaching PostgreSQL, and
//! errors before and during the stream.

use std::time::Duration;

use crate::support::*;
use pgsidecar::proto::QueryRequest;
use tonic::Code;

#[tokio::test]
async fn a_million_rows_stream_in_bounded_chunks_with_bounded_memory() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let req = request(
        "SELECT g, repeat('x', 40) AS pad FROM generate_series(1, 1000000) g",
        vec![],
    );
    let mut stream = c.stream_query(req).await.expect("stream").into_inner();
    let (mut rows, mut messages, mut last) = (0usize, 0usize, None);
    let mut expected_next = 1i64;
    let mut paused = false;
    while let Some(msg) = stream.message().await.expect("chunk") {
        messages += 1;
        if messages == 1 {
            assert_eq!(
                msg.columns.len(),
                2,
                "the first message carries the columns"
            );
        } else {
            assert!(msg.columns.is_empty());
        }
        assert!(msg.rows.len() <= 1000, "chunk of {} rows", msg.rows.len());
        for r in &msg.rows {
            assert_eq!(r.values[0], int(expected_next));
            expected_next += 1;
        }
        rows += msg.rows.len();
        if rows >= 100_000 && !paused {
            // A slow reader: the sidecar must wait, not buffer the rest of the result.
            paused = true;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (_, rss) = memory_kib(sidecar.child.id());
            assert!(rss < 100 * 1024, "RSS while the client pauses: {rss} KiB");
        }
        if !msg.command_tag.is_empty() {
            last = Some(msg);
        }
    }
    assert_eq!(rows, 1_000_000);
    let last = last.expect("a final message");
    assert_eq!(last.command_tag, "SELECT 1000000");
    assert_eq!(last.rows_affected, 1_000_000);
    assert!(last.info.is_some());
    assert!(messages >= 1000);
    let (peak, _) = memory_kib(sidecar.child.id());
    assert!(peak < 150 * 1024, "peak RSS {peak} KiB");
}

#[tokio::test]
async fn a_client_cancel_stops_the_streaming_query_in_postgres() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let marker = unique("streamcancel");
    // A set-returning function in the select list streams rows as it makes them.
    let sql = format!("SELECT generate_series(1, 2000000000) /* {marker} */");
    let mut stream = c
        .stream_query(request(&sql, vec![]))
        .await
        .expect("stream")
        .into_inner();
    stream
        .message()
        .await
        .expect("first chunk")
        .expect("some rows");
    drop(stream);
    let gone = eventually(Duration::from_secs(1), || async {
        active_statements(&db, &marker).await == 0
    })
    .await;
    assert!(gone, "the query stopped within a second of the cancel");
}

#[tokio::test]
async fn errors_end_the_stream_with_their_status_and_max_rows_truncates() {
    let sidecar = Sidecar::start(&[]);
    let mut c = sidecar.client().await;

    let err = c
        .stream_query(request("SELECT * FROM nowhere_xyz", vec![]))
        .await;
    let err = match err {
        Err(e) => e,
        Ok(r) => r.into_inner().message().await.expect_err("error status"),
    };
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(error_info(&err).1["sqlstate"], "42P01");

    // Division by zero at row 5000: the first chunks arrive, then the error.
    let sql = "SELECT 1 / (5000 - g) FROM generate_series(1, 10000) g";
    let mut s = c
        .stream_query(request(sql, vec![]))
        .await
        .expect("stream")
        .into_inner();
    let mut got = 0;
    let err = loop {
        match s.message().await {
            Ok(Some(m)) => got += m.rows.len(),
            Ok(None) => panic!("the stream should fail"),
            Err(e) => break e,
        }
    };
    assert!((1000..5000).contains(&got), "{got} rows before the error");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(error_info(&err).1["sqlstate"], "22012");

    let req = QueryRequest {
        max_rows: 2500,
        ..request("SELECT g FROM generate_series(1, 10000) g", vec![])
    };
    let mut s = c.stream_query(req).await.expect("stream").into_inner();
    let (mut rows, mut last) = (0, None);
    while let Some(m) = s.message().await.expect("chunk") {
        rows += m.rows.len();
        last = Some(m);
    }
    let last = last.expect("last");
    assert_eq!(
        (rows, last.truncated, last.rows_affected),
        (2500, true, 10000)
    );
}

#[tokio::test]
async fn a_stream_that_fails_midway_does_not_leave_its_statement_running() {
    // One connection; the stream's deadline ends it while its last row is still being made.
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "1",
        "--pool-min",
        "1",
        "--connection-timeout",
        "500",
    ]);
    let mut c = sidecar.client().await;
    let db = admin().await;
    let marker = unique("leftover");
    let sql = format!(
        "SELECT point(g, g), (g = 2000 AND pg_sleep(4) IS NOT NULL) FROM generate_series(1, 2000) g /* {marker} */"
    );
    let mut req = request(&sql, vec![]);
    req.timeout = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    let mut s = c.stream_query(req).await.expect("stream").into_inner();
    let err = stream_error(&mut s, "expected the deadline to end the stream").await;
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let stopped = eventually(Duration::from_secs(1), || async {
        active_statements(&db, &marker).await == 0
    })
    .await;
    assert!(stopped, "the failed stream's statement was cancelled");
    let r = query(&mut c, "SELECT 1", vec![])
        .await
        .expect("the pool serves again");
    assert_eq!(scalar(&r), &int(1));
}

#[tokio::test]
async fn server_text_streams_on_the_one_connection_it_has() {
    // A pool of one: the text of `point` is asked on the streaming connection itself.
    let sidecar = Sidecar::start(&["--pool-max", "1", "--pool-min", "1"]);
    let mut c = sidecar.client().await;
    let sql = "SELECT g, point(g, -g) FROM generate_series(1, 2500) g";
    let mut s = c
        .stream_query(request(sql, vec![]))
        .await
        .expect("stream")
        .into_inner();
    let (mut rows, mut last) = (Vec::new(), None);
    while let Some(m) = s.message().await.expect("chunk") {
        rows.extend(m.rows.clone());
        last = Some(m);
    }
    let last = last.expect("a last message");
    assert_eq!(rows.len(), 2500);
    assert_eq!(rows[2499].values, vec![int(2500), text("(2500,-2500)")]);
    assert_eq!(
        (last.rows_affected, last.command_tag.as_str()),
        (2500, "SELECT 2500")
    );
    // Capped: every row is still counted, only the first are sent.
    let mut capped = request(sql, vec![]);
    capped.max_rows = 10;
    let mut s = c.stream_query(capped).await.expect("stream").into_inner();
    let mut got = Vec::new();
    while let Some(m) = s.message().await.expect("chunk") {
        got.push(m);
    }
    let sent: usize = got.iter().map(|m| m.rows.len()).sum();
    let end = got.last().expect("a last message");
    assert_eq!((sent, end.truncated, end.rows_affected), (10, true, 2500));
    // The connection is back, outside any transaction.
    let r = query(
        &mut c,
        "SELECT count(*) FROM pg_cursors WHERE name = 'pgsidecar_stream'",
        vec![],
    )
    .await
    .expect("the pool serves again");
    assert_eq!(
        scalar(&r),
        &int(0),
        "the cursor and its transaction are over"
    );
}

#[tokio::test]
async fn a_write_returning_server_text_streams_on_its_one_connection() {
    // Not a cursor query: the rows are held until the INSERT ends, then get their text on
    // the same connection. A pool of one, so nothing else could serve that text.
    let db = admin().await;
    let table = unique("returning_points");
    db.batch_execute(&format!("CREATE TABLE {table} (p point)"))
        .await
        .expect("create");
    let sidecar = Sidecar::start(&[
        "--pool-max",
        "1",
        "--pool-min",
        "1",
        "--max-message-bytes",
        "65536",
    ]);
    let mut c = sidecar.client().await;
    let insert = |n: i64| {
        let mut r = request(
            &format!(
                "INSERT INTO {table} SELECT point(g, -g) FROM generate_series(1, $1::int) g \
                 RETURNING p"
            ),
            vec![int(n)],
        );
        r.timeout = Some(prost_types::Duration {
            seconds: 10,
            nanos: 0,
        });
        r
    };
    let mut s = c
        .stream_query(insert(2500))
        .await
        .expect("stream")
        .into_inner();
    let (mut rows, mut messages, mut last) = (Vec::new(), 0, None);
    while let Some(m) = s.message().await.expect("chunk") {
        rows.extend(m.rows.clone());
        messages += 1;
        last = Some(m);
    }
    let last = last.expect("a last message");
    assert_eq!(rows.len(), 2500);
    assert!(messages >= 3, "{messages} messages for 2500 rows");
    assert_eq!(rows[0].values, vec![text("(1,-1)")]);
    assert_eq!(rows[2499].values, vec![text("(2500,-2500)")]);
    assert_eq!(last.command_tag, "INSERT 0 2500");
    // Held whole means bounded: past the message limit it is refused, clearly, and the
    // pool's one connection is fit to serve again.
    let mut s = c
        .stream_query(insert(20_000))
        .await
        .expect("stream")
        .into_inner();
    let err = stream_error(&mut s, "a held result past the limit must fail").await;
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("cast"), "{err:?}");
    let r = query(&mut c, "SELECT 1", vec![])
        .await
        .expect("the pool serves again");
    assert_eq!(scalar(&r), &int(1));
    let _ = db.batch_execute(&format!("DROP TABLE {table}")).await;
}
