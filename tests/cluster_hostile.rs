//! The cluster against hostile input on its Redis channels (SPEC §9 and
//! the README's cluster notes): anyone who reaches Redis may publish
//! malformed events, forged deliveries, probes and replies or plain noise,
//! and may answer a node's questions with replies of their own; none of it
//! corrupts or disrupts a node. Real `wsbeat` processes and a real
//! `redis-server`, one per test.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cluster::{Node, expect_event, get, holder_of, is_ready, node_ids, push, read_text, within};
use common::redis::RedisServer;
use common::{DEADLINE, Events, Response, http};
use serde_json::Value;

/// A connection to Redis speaking raw RESP2, for what
/// [`RedisServer::cmd`] cannot send (payloads that are not UTF-8) or read
/// (messages of a subscription).
struct RedisPeer {
    r: BufReader<TcpStream>,
}

/// One RESP2 reply: an integer, a string (simple or bulk), a null or an
/// array of them.
#[derive(Debug)]
enum Resp {
    Int(i64),
    Str(Vec<u8>),
    Nil,
    Array(Vec<Resp>),
}

impl RedisPeer {
    fn connect(redis: &RedisServer) -> RedisPeer {
        let s = TcpStream::connect(("127.0.0.1", redis.port())).expect("connect to Redis");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        RedisPeer { r: BufReader::new(s) }
    }

    /// Subscribed to `channel`.
    fn subscribe(redis: &RedisServer, channel: &str) -> RedisPeer {
        let mut p = RedisPeer::connect(redis);
        p.send(&[b"SUBSCRIBE", channel.as_bytes()]);
        let confirmed = p.reply();
        assert!(
            matches!(&confirmed, Resp::Array(a) if matches!(&a[0], Resp::Str(k) if k == b"subscribe")),
            "{confirmed:?}"
        );
        p
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.r.get_mut().write_all(&out).expect("write to Redis");
    }

    fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line).expect("read from Redis");
        assert!(
            line.ends_with(b"\r\n"),
            "from Redis: {:?}",
            String::from_utf8_lossy(&line)
        );
        line.truncate(line.len() - 2);
        line
    }

    fn reply(&mut self) -> Resp {
        let line = self.line();
        let rest = String::from_utf8_lossy(&line[1..]).into_owned();
        let n = || rest.parse::<i64>().unwrap_or_else(|_| panic!("RESP number {rest:?}"));
        match line[0] {
            b'+' => Resp::Str(line[1..].to_vec()),
            b'-' => panic!("Redis error: {rest}"),
            b':' => Resp::Int(n()),
            b'$' if n() < 0 => Resp::Nil,
            b'$' => {
                let mut data = vec![0; n() as usize + 2];
                self.r.read_exact(&mut data).expect("read from Redis");
                data.truncate(data.len() - 2);
                Resp::Str(data)
            }
            b'*' if n() < 0 => Resp::Nil,
            b'*' => Resp::Array((0..n()).map(|_| self.reply()).collect()),
            k => panic!("RESP type {:?}", k as char),
        }
    }

    /// PUBLISH of any bytes: how many subscribers Redis handed it to.
    fn publish(&mut self, channel: &str, payload: &[u8]) -> i64 {
        self.send(&[b"PUBLISH", channel.as_bytes(), payload]);
        match self.reply() {
            Resp::Int(n) => n,
            other => panic!("PUBLISH: {other:?}"),
        }
    }

    /// The payload of the next message of a subscription, if one comes
    /// within `wait`.
    fn message(&mut self, wait: Duration) -> Option<Vec<u8>> {
        // Only the first byte is waited for with `wait`: a message is then
        // read whole.
        self.r.get_ref().set_read_timeout(Some(wait)).unwrap();
        let ready = match self.r.fill_buf() {
            Ok(b) => !b.is_empty(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) => panic!("subscription: {e}"),
        };
        self.r.get_ref().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if !ready {
            return None;
        }
        match self.reply() {
            Resp::Array(mut a) if a.len() == 3 && matches!(&a[0], Resp::Str(k) if k == b"message") => match a.pop() {
                Some(Resp::Str(payload)) => Some(payload),
                other => panic!("a message without a payload: {other:?}"),
            },
            other => panic!("not a message: {other:?}"),
        }
    }
}

/// Deterministic noise (xorshift64): `n` bytes from `seed`.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The connection number Redis has for `id` (`wsbeat:id:ID` is
/// `NODE|CONN|BOUND_AT_MS`).
fn conn_of(redis: &RedisServer, id: &str) -> String {
    let v = redis.cmd(&["GET", &format!("wsbeat:id:{id}")]);
    let v = v
        .as_str()
        .unwrap_or_else(|| panic!("wsbeat:id:{id}: {v:?}"))
        .to_string();
    let parts: Vec<&str> = v.split('|').collect();
    assert_eq!(parts.len(), 3, "wsbeat:id:{id} = {v}");
    assert!(parts[1].parse::<u64>().is_ok(), "wsbeat:id:{id} = {v}");
    parts[1].to_string()
}

/// Lines a node logged that say its cluster went down or its subscription
/// stopped working.
fn flaps(node: &Node) -> Vec<String> {
    node.proc
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            l.contains("cluster: down") || l.contains("probes stopped coming back") || l.contains("reconnecting")
        })
        .cloned()
        .collect()
}

/// SPEC §9 and the README's cluster notes: anyone who reaches Redis can
/// publish on the nodes' channels. Malformed presence events, deliveries
/// naming a real connection under another id, over-long kick reasons,
/// forged probes and replies, broadcasts from no valid node and plain
/// noise are all ignored: no client is closed or sent anything, `/events`
/// shows nothing of them, `/clients` lists exactly the real clients, and
/// both nodes stay ready.
#[test]
fn hostile_publishers_cannot_corrupt_or_disrupt_a_node() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "A", &[]);
    let b = Node::start(&redis.url(), "B", &[]);
    let mut streams = [Events::open(a.admin()), Events::open(b.admin())];
    let mut victim = a.client("victim");
    let mut other = a.client("other");
    for ev in &mut streams {
        let mut online = Vec::new();
        for _ in 0..2 {
            // Nothing else happens in this cluster: the next two events.
            let (kind, d) = ev.next();
            assert_eq!((kind.as_str(), d["node"].as_str()), ("online", Some("A")), "{d}");
            online.push(d["id"].as_str().unwrap().to_string());
        }
        online.sort();
        assert_eq!(online, ["other", "victim"]);
    }
    let victim_conn = conn_of(&redis, "victim");
    let other_conn = conn_of(&redis, "other");
    assert_ne!(victim_conn, other_conn);

    const EVENTS: &str = "wsbeat:events";
    const BROADCAST: &str = "wsbeat:broadcast";
    let long_node = "n".repeat(65);
    let long_id = "i".repeat(129);
    let mut events: Vec<Vec<u8>> = [
        // Node ids and client ids outside their alphabets or lengths.
        "online\nA\"\nforged\n1",
        "online\nA\nfor\"ged\n1",
        "online\nA\\\nforged\n1",
        "online\nA\nfor\\ged\n1",
        "online\nA\r\nforged\n1",
        "online\nA\nforged\r\n1",
        "online\nA B\nforged\n1",
        "online\nA\nfor ged\n1",
        "online\nA\nfor\0ged\n1",
        "online\nA\nfor\u{e9}ged\n1",
        &format!("online\n{long_node}\nforged\n1"),
        &format!("online\nA\n{long_id}\n1"),
        "online\n\nforged\n1",
        "online\nA\n\n1",
        // Times that are no Unix milliseconds, fields missing or extra.
        "online\nA\nforged\n-1",
        "online\nA\nforged\n1.5",
        "online\nA\nforged\n99999999999999999999",
        "online\nA\nforged\n",
        "online\nA\nforged",
        "online\nA\nforged\n1\nextra",
        "online",
        "Online\nA\nforged\n1",
        // Offline events about a real client: reasons that are none of
        // the documented ones, and the same faults as above.
        "offline\nA\nvictim\nbored\n1",
        "offline\nA\nvictim\nReplaced\n1",
        "offline\nA\nvictim\nnode_lost \n1",
        "offline\nA\nvictim\n\n1",
        "offline\nA\nvictim\nclosed",
        "offline\nA\"\nvictim\nclosed\n1",
        "offline\nA\nvic\"tim\nclosed\n1",
        "offline\nA\nvictim\nclosed\n-1",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    events.push(b"online\nA\nforged\xff\n1".to_vec());

    let mut directed: Vec<Vec<u8>> = [
        // victim's real connection number under the id `other`, and the
        // other way round: neither connection holds that id with that
        // number, so nothing is closed.
        format!("replaced\nother\n{victim_conn}"),
        format!("rejected\nother\n{victim_conn}"),
        format!("replaced\nvictim\n{other_conn}"),
        format!("rejected\nvictim\n{other_conn}"),
        format!("replaced\nvictim\n{victim_conn}x"),
        format!("replaced\nvictim\n-{victim_conn}"),
        format!("replaced\nvictim\n{victim_conn}\n"),
        format!("rejected\nvic\"tim\n{victim_conn}"),
        "replaced\nvictim".into(),
        // Kick reasons over a close frame's 123 bytes; bad ids.
        format!("kick\nvictim\n{}", "r".repeat(200)),
        format!("kick\nvictim\n{}", "r".repeat(124)),
        "kick\nvictim".into(),
        "kick\nvic tim\nbye".into(),
        "kick\nvic\"tim\nbye".into(),
        // Pushes of no known kind, or to a bad id.
        "push\nvictim\nx\nforged push".into(),
        "push\nvictim\nT\nforged push".into(),
        "push\nvictim\nt".into(),
        "push\nvic\"tim\nt\nforged push".into(),
        // Probes from the future (never published by the node), malformed
        // ones, and stale ones (at most what it has seen already).
        "probe\n999999999999".into(),
        "probe\n18446744073709551615".into(),
        "probe\n18446744073709551616".into(),
        "probe\n-1".into(),
        "probe\nx".into(),
        "probe".into(),
        "probe\n0".into(),
        "probe\n1".into(),
        // Questions from bad node ids, about bad ids, of unknown kinds.
        "req\nA B\n1\nclient\nvictim".into(),
        "req\nB\"\n1\nclient\nvictim".into(),
        "req\nB\n1\nclient\nvic\"tim".into(),
        "req\nB\nx\nclient\nvictim".into(),
        "req\nB\n1\npage\n99999999999999999999999\n".into(),
        "req\nB\n1\npage\n5\nbad id".into(),
        "req\nB\n1\nwhat\nvictim".into(),
        "req\nB\n1\nclient".into(),
        // Replies nobody asked for: a huge total, malformed JSON, bad
        // request numbers.
        "reply\n0\n{\"total\":18446744073709551615,\"clients\":[]}".into(),
        "reply\n1\n{\"total\":18446744073709551615,\"clients\":[]}".into(),
        "reply\n18446744073709551615\n{\"total\":18446744073709551615,\"clients\":[]}".into(),
        "reply\n2\n{\"total\":".into(),
        "reply\nx\n{}".into(),
        "reply\n-1\n{}".into(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    directed.extend([
        b"kick\nvictim\n\xff\xfe".to_vec(),
        b"push\nvictim\nt\n\xff forged".to_vec(),
        b"replaced\nvictim\n\xff".to_vec(),
    ]);

    let mut broadcasts: Vec<Vec<u8>> = [
        "A B\nt\nforged broadcast",
        "\nt\nforged broadcast",
        "A\"\nt\nforged broadcast",
        "A\\\nt\nforged broadcast",
        "Z\r\nt\nforged broadcast",
        &format!("{long_node}\nt\nforged broadcast"),
        "A\nx\nforged broadcast",
        "A\nt",
        "A",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    broadcasts.push(b"A\nt\n\xff forged broadcast".to_vec());

    // Noise, its first byte outside every message kind and node alphabet.
    let mut garbage: Vec<Vec<u8>> = vec![Vec::new(), b"\n\n\n\n".to_vec(), b"\r\n\r\n".to_vec(), vec![b'\n'; 100]];
    for (seed, len) in [(1, 300), (2, 4096), (3, 65_536)] {
        let mut g = noise(0x9E37_79B9_7F4A_7C15 ^ seed, len);
        g[0] = 0xff;
        garbage.push(g);
    }

    let mut publisher = RedisPeer::connect(&redis);
    let mut sent = 0;
    // Redis hands each to every node subscribed: both for the shared
    // channels, the one for its own.
    let mut publish = |channel: &str, payloads: &[Vec<u8>], receivers: i64| {
        for p in payloads {
            let got = publisher.publish(channel, p);
            assert_eq!(got, receivers, "PUBLISH {channel} {:?}", String::from_utf8_lossy(p));
            sent += 1;
        }
    };
    publish(EVENTS, &events, 2);
    publish(BROADCAST, &broadcasts, 2);
    for to in ["wsbeat:to:A", "wsbeat:to:B"] {
        publish(to, &directed, 1);
    }
    for (channel, receivers) in [(EVENTS, 2), (BROADCAST, 2), ("wsbeat:to:A", 1), ("wsbeat:to:B", 1)] {
        publish(channel, &garbage, receivers);
    }
    eprintln!("published {sent} hostile messages");

    // A fixed wait, to show that nothing happens: a node whose subscriber
    // died on a message, or whose probe accounting a forged probe upset,
    // is no longer ready within three probe periods (1 s each).
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(3500) {
        for n in [&a, &b] {
            assert!(
                is_ready(n),
                "{} not ready {:?} after the hostile messages",
                n.id,
                t.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Deliveries through Redis come after the hostile messages on A's
    // subscription, and each loop takes them in order: had A closed, kicked
    // or sent anything to victim or other, it would come first.
    for (id, raw) in [("victim", &mut victim), ("other", &mut other)] {
        let body = format!("hello {id}");
        let r = push(&b, id, &body);
        assert_eq!(r.status, 202, "push to {id}, which must still be online: {}", r.text());
        assert_eq!(r.json()["node"], "A");
        assert_eq!(read_text(raw), body, "{id}'s next message");
    }

    // Events: the next on either stream is marker's, so nothing forged got
    // through before it (each stream would have failed to parse anything
    // malformed).
    let _marker = a.client("marker");
    for ev in &mut streams {
        expect_event(ev, "online", "marker", None, "A");
    }

    let page = get(&b, "/clients");
    assert_eq!(page.status, 200, "{}", page.text());
    let clients = page.json();
    assert_eq!(clients["total"], 3, "{clients}");
    let listed: Vec<(&str, &str)> = clients["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["node"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("marker", "A"), ("other", "A"), ("victim", "A")], "{clients}");
    assert_eq!(clients["next"], Value::Null);
    assert_eq!(node_ids(&get(&a, "/nodes")), ["A", "B"]);
    for n in [&a, &b] {
        assert!(is_ready(n), "{} not ready", n.id);
        assert_eq!(flaps(n), Vec::<String>::new(), "{}'s log", n.id);
    }
}

/// Node Z as Redis sees it (a lease, a place in the node set, the id
/// `ghost`), played by the test: subscribed to Z's channel, it answers the
/// questions a real node asks Z with whatever reply the test chooses.
struct FakeNode {
    questions: RedisPeer,
    replies: RedisPeer,
}

impl FakeNode {
    fn z(redis: &RedisServer) -> FakeNode {
        let questions = RedisPeer::subscribe(redis, "wsbeat:to:Z");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        redis.cmd(&["SET", "wsbeat:lease:Z", &format!("z-token|1|1|{now}"), "PX", "60000"]);
        redis.cmd(&["SADD", "wsbeat:nodes", "Z"]);
        redis.cmd(&["SET", "wsbeat:id:ghost", "Z|1|1"]);
        FakeNode {
            questions,
            replies: RedisPeer::connect(redis),
        }
    }

    /// GETs `target` on `asker`, answering every question it asks Z
    /// meanwhile with `body`: the response, how long it took, and the
    /// questions asked (`req\nFROM\nREQ\n...`).
    fn ask(&mut self, asker: &Node, target: &str, body: &str) -> (Response, Duration, Vec<String>) {
        // Nothing left over from an earlier request.
        while self.questions.message(Duration::from_millis(1)).is_some() {}
        let (admin, target) = (asker.admin(), target.to_string());
        let t = Instant::now();
        let request = std::thread::spawn(move || http(admin, "GET", &target, "", b""));
        let mut questions = Vec::new();
        while !request.is_finished() {
            let Some(q) = self.questions.message(Duration::from_millis(20)) else {
                continue;
            };
            let q = String::from_utf8(q).unwrap();
            let fields: Vec<&str> = q.split('\n').collect();
            assert_eq!(&fields[..2], ["req", asker.id.as_str()], "{q:?}");
            let reply = format!("reply\n{}\n{body}", fields[2]);
            let heard = self
                .replies
                .publish(&format!("wsbeat:to:{}", asker.id), reply.as_bytes());
            assert_eq!(heard, 1, "{}'s subscription", asker.id);
            questions.push(q);
        }
        let r = request.join().unwrap();
        (r, t.elapsed(), questions)
    }
}

/// A CLIENT as a node sends it in a reply.
fn client_json(id: &str, node: &str) -> String {
    format!(r#"{{"id":"{id}","node":"{node}","peer":"192.0.2.1:5","connected_at_ms":1,"last_seen_ms":2}}"#)
}

/// README, cluster notes: replies to a node's questions are checked.
/// Valid ones are used; replies that are malformed, name a bad id or node,
/// or hold more than the page asked make the request 503 at once, never a
/// corrupt answer.
#[test]
fn forged_replies_to_a_node_s_questions_get_a_503_not_a_corrupt_answer() {
    let redis = RedisServer::start();
    let b = Node::start(&redis.url(), "B", &[]);
    let _b1 = b.client("b1");
    assert!(within(DEADLINE, || redis.cmd(&["EXISTS", "wsbeat:id:b1"]).as_int() == Some(1)));
    let mut z = FakeNode::z(&redis);
    let ghost = client_json("ghost", "Z");

    // Valid replies: the setup works.
    let (r, _, questions) = z.ask(&b, "/clients/ghost", &format!(r#"{{"client":{ghost}}}"#));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["node"], "Z");
    assert_eq!(questions.len(), 1, "{questions:?}");
    assert!(questions[0].ends_with("\nclient\nghost"), "{questions:?}");
    let (r, _, questions) = z.ask(&b, "/clients", &format!(r#"{{"total":1,"clients":[{ghost}]}}"#));
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.json();
    assert_eq!(page["total"], 2, "{page}");
    assert_eq!(page["clients"][0]["id"], "b1", "{page}");
    assert_eq!(page["clients"][1]["id"], "ghost", "{page}");
    assert_eq!(questions.len(), 1, "{questions:?}");
    assert!(questions[0].ends_with("\npage\n1001\n"), "{questions:?}");

    let bad_client_replies = [
        r#"{"client":"#.to_string(),
        "not json".to_string(),
        format!(r#"{{"client":{}}}"#, client_json("gh\\\"ost", "Z")),
        format!(r#"{{"client":{}}}"#, client_json("gh ost", "Z")),
        format!(r#"{{"client":{}}}"#, client_json("ghost", "Z B")),
        format!(r#"{{"client":{}}}"#, client_json("ghost", "Z\\\"")),
        r#"{"client":{"id":"ghost","node":"Z"}}"#.to_string(),
        r#"{"error":"unavailable"}"#.to_string(),
    ];
    let bad_page_replies = [
        r#"{"total":"#.to_string(),
        r#"{"total":-1,"clients":[]}"#.to_string(),
        r#"{"total":1}"#.to_string(),
        format!(r#"{{"total":1,"clients":[{}]}}"#, client_json("gh\\\"ost", "Z")),
        format!(r#"{{"total":1,"clients":[{}]}}"#, client_json("ghost", "Z\\r")),
        // The page asked is 1 (plus one, to tell whether more follow).
        format!(
            r#"{{"total":18446744073709551615,"clients":[{},{},{}]}}"#,
            client_json("g1", "Z"),
            client_json("g2", "Z"),
            client_json("g3", "Z")
        ),
        r#"{"error":"unavailable"}"#.to_string(),
    ];
    for (target, bodies) in [
        ("/clients/ghost", &bad_client_replies[..]),
        ("/clients?limit=1", &bad_page_replies[..]),
    ] {
        for body in bodies {
            let (r, took, questions) = z.ask(&b, target, body);
            eprintln!(
                "{target} answered with {body}: {} after {took:?}, {} questions",
                r.status,
                questions.len()
            );
            assert!(!questions.is_empty(), "B did not ask Z");
            assert_eq!(r.status, 503, "{target} answered with {body}: {}", r.text());
            assert_eq!(
                r.json()["error"],
                "cluster unavailable",
                "{target} answered with {body}"
            );
            // Refused, not waited out: well within the 1.7 s a question
            // may take (B asks twice, on a fresh Redis connection).
            assert!(took < Duration::from_secs(1), "{target} answered with {body}: {took:?}");
        }
    }

    // A huge count is no reason to fail: it is added without overflow.
    let (r, _, _) = z.ask(&b, "/clients", r#"{"total":18446744073709551615,"clients":[]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.json();
    assert!(page["total"].as_u64().is_some_and(|t| t >= 1), "{page}");
    assert_eq!(page["clients"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["clients"][0]["id"], "b1", "{page}");

    assert!(is_ready(&b));
    assert_eq!(holder_of(&b, "b1").as_deref(), Some("B"));
}

/// Replies that are well-formed but do not answer the question asked: a
/// CLIENT of another id, or of another node than the one asked; a page
/// holding ids at or before `after`, or clients of a node other than the
/// one asked. The answer must be a 503, or leave them out; never pass them
/// on as the cluster's answer.
#[test]
fn replies_that_do_not_answer_the_question_asked_are_not_passed_on() {
    let redis = RedisServer::start();
    let b = Node::start(&redis.url(), "B", &[]);
    let _b1 = b.client("b1");
    assert!(within(DEADLINE, || redis.cmd(&["EXISTS", "wsbeat:id:b1"]).as_int() == Some(1)));
    let mut z = FakeNode::z(&redis);

    let mut failures = Vec::new();
    for (asked, bad) in [("someone", "Z"), ("ghost", "Y"), ("ghost", "B")] {
        let body = format!(r#"{{"client":{}}}"#, client_json(asked, bad));
        let (r, _, _) = z.ask(&b, "/clients/ghost", &body);
        let ok = r.status == 503 || (r.status == 200 && r.json()["id"] == "ghost" && r.json()["node"] == "Z");
        if !ok {
            failures.push(format!(
                "GET /clients/ghost, Z replied {body}: {} {}",
                r.status,
                r.text()
            ));
        }
    }
    for (target, id, node) in [
        // Z is asked for what follows b1.
        ("/clients?after=b1&limit=5", "a0", "Z"),
        ("/clients?after=b1&limit=5", "b1", "Z"),
        // Z is asked for its own clients.
        ("/clients?limit=5", "zz", "B"),
        ("/clients?node=Z&limit=5", "zz", "Q"),
    ] {
        let body = format!(r#"{{"total":1,"clients":[{}]}}"#, client_json(id, node));
        let (r, _, _) = z.ask(&b, target, &body);
        let passed_on = r.status == 200
            && r.json()["clients"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == id && c["node"] == node);
        if r.status != 503 && passed_on {
            failures.push(format!("GET {target}, Z replied {body}: {} {}", r.status, r.text()));
        }
    }
    assert!(
        failures.is_empty(),
        "replies passed on as the cluster's answer:\n{}",
        failures.join("\n")
    );
}
