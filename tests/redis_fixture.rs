//! The Redis fixture the cluster tests stand on: a real `redis-server` that
//! starts, answers, counts commands, restarts empty on its port and dies.

mod common;

use std::io::ErrorKind;
use std::net::TcpStream;

use common::redis::{RedisServer, RespValue};

#[test]
fn redis_fixture_starts_counts_restarts_and_dies() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));

    assert_eq!(redis.cmd(&["SET", "greeting", "hello"]), RespValue::Simple("OK".into()));
    assert_eq!(redis.cmd(&["GET", "greeting"]).as_str(), Some("hello"));
    assert_eq!(redis.cmd(&["GET", "missing"]), RespValue::Bulk(None));
    assert_eq!(redis.cmd(&["RPUSH", "list", "a", "b"]).as_int(), Some(2));
    assert_eq!(
        redis.cmd(&["LRANGE", "list", "0", "-1"]),
        RespValue::Array(Some(vec![
            RespValue::Bulk(Some(b"a".to_vec())),
            RespValue::Bulk(Some(b"b".to_vec()))
        ]))
    );
    assert!(matches!(redis.cmd(&["INCR", "greeting"]), RespValue::Error(e) if e.starts_with("ERR")));

    let calls = redis.command_calls();
    assert_eq!(calls.get("set"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("get"), Some(&2), "{calls:?}");
    redis.config_resetstat();
    assert_eq!(redis.command_calls().get("set"), None);

    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(
        redis.cmd(&["GET", "greeting"]),
        RespValue::Bulk(None),
        "a restarted server is empty"
    );
    assert_eq!(redis.cmd(&["DBSIZE"]).as_int(), Some(0));

    redis.kill();
    redis.kill();
    let refused = TcpStream::connect(("127.0.0.1", port)).expect_err("connected to a killed server");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    assert!(redis.try_cmd(&["PING"]).is_err());
}
