//! Message-queue triggers against the real brokers on loopback: NATS
//! JetStream and Redis Streams (scripts/services.sh starts them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::kafka::Kafka;
use common::{Server, eventually, function_file, redis};

/// A name no earlier run used: brokers outlive test runs.
fn unique(prefix: &str) -> String {
    let n: u32 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{n:x}", std::process::id())
}

/// The `payload` (and `error`) values of a stream, in order.
fn stream_values(stream: &str, field: &str) -> Vec<String> {
    let out = redis(&["--raw", "XRANGE", stream, "-", "+"]);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == field)
        .map(|w| w[1].to_string())
        .collect()
}

fn python_function(server: &Server, name: &str) {
    server.ok(&[
        "env",
        "create",
        "--name",
        "python",
        "--runtime",
        "python",
        "--poolsize",
        "1",
    ]);
    let code = function_file("mq.py");
    server.ok(&[
        "fn",
        "create",
        "--name",
        name,
        "--env",
        "python",
        "--code",
        code.to_str().unwrap(),
        "--maxscale",
        "4",
    ]);
}

fn wait_connected(server: &Server, trigger: &str) {
    eventually(Duration::from_secs(20), || {
        let view: serde_json::Value =
            serde_json::from_str(&server.ok(&["mqt", "get", "--name", trigger, "-o", "json"]))
                .unwrap();
        (view["status"]["connected"] == true).then_some(())
    });
}

#[test]
fn redis_streams_success_failure_and_order() {
    let server = Server::start();
    python_function(&server, "worker");
    let (input, output, errors) = (unique("in"), unique("out"), unique("err"));
    server.ok(&[
        "mqt",
        "create",
        "--name",
        "rs",
        "--function",
        "worker",
        "--mqtype",
        "redis",
        "--topic",
        &input,
        "--resptopic",
        &output,
        "--errortopic",
        &errors,
        "--maxretries",
        "2",
        "--ordered",
    ]);
    wait_connected(&server, "rs");

    // In order, including a failure in the middle.
    for i in 0..10 {
        let payload = if i == 4 {
            "fail-4".to_string()
        } else {
            format!("slow-{i}")
        };
        redis(&["XADD", &input, "*", "payload", &payload]);
    }
    let out = eventually(Duration::from_secs(30), || {
        let out = stream_values(&output, "payload");
        (out.len() == 9).then_some(out)
    });
    let expected: Vec<String> = (0..10)
        .filter(|i| *i != 4)
        .map(|i| format!("processed:slow-{i}"))
        .collect();
    assert_eq!(out, expected, "one at a time, in order");
    let failed = stream_values(&errors, "payload");
    assert_eq!(failed, ["fail-4"]);
    let reason = stream_values(&errors, "error");
    assert!(
        reason[0].contains("ValueError: cannot process fail-4"),
        "{reason:?}"
    );
    // 1 try + 2 retries, each leaving a traceback in the log.
    let logs = eventually(Duration::from_secs(10), || {
        let logs = server.ok(&[
            "fn",
            "logs",
            "--name",
            "worker",
            "--contains",
            "raise ValueError",
        ]);
        (logs.lines().count() >= 3).then_some(logs)
    });
    assert_eq!(logs.lines().count(), 3, "{logs}");
    let headers = server.ok(&["fn", "logs", "--name", "worker", "--contains", "got slow-0"]);
    assert!(
        headers.contains("dev.flare.mq.redis"),
        "CloudEvents type reaches the function: {headers}"
    );
    let view: serde_json::Value =
        serde_json::from_str(&server.ok(&["mqt", "get", "--name", "rs", "-o", "json"])).unwrap();
    assert_eq!(view["status"]["processed"], 9);
    assert_eq!(view["status"]["failed"], 1);
    // Everything acknowledged: nothing pending for the group.
    let pending = redis(&["XPENDING", &input, "flare-rs"]);
    assert!(pending.starts_with("0\n"), "{pending}");
    for key in [&input, &output, &errors] {
        redis(&["DEL", key]);
    }
}

#[test]
fn redis_kill_9_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    python_function(&server, "worker");
    let (input, output) = (unique("in"), unique("out"));
    server.ok(&[
        "mqt",
        "create",
        "--name",
        "rs",
        "--function",
        "worker",
        "--mqtype",
        "redis",
        "--topic",
        &input,
        "--resptopic",
        &output,
        "--concurrency",
        "4",
    ]);
    wait_connected(&server, "rs");
    for i in 0..60 {
        redis(&["XADD", &input, "*", "payload", &format!("slow-{i}")]);
    }
    eventually(Duration::from_secs(20), || {
        (stream_values(&output, "payload").len() >= 5).then_some(())
    });
    server.kill9();
    let done_before = stream_values(&output, "payload").len();
    assert!(done_before < 60, "killed mid-stream ({done_before} done)");

    let server = Server::start_in(dir.path(), &[]);
    let out = eventually(Duration::from_secs(60), || {
        let out = stream_values(&output, "payload");
        let distinct: std::collections::BTreeSet<String> = out.iter().cloned().collect();
        (distinct.len() == 60).then_some(distinct)
    });
    for i in 0..60 {
        assert!(
            out.contains(&format!("processed:slow-{i}")),
            "message {i} lost"
        );
    }
    drop(server);
    for key in [&input, &output] {
        redis(&["DEL", key]);
    }
}

#[test]
fn a_broker_that_is_down_is_reported_and_the_server_goes_on() {
    let server = Server::start();
    server.create("hello", "hello_rust", &[]);
    server.ok(&[
        "mqt",
        "create",
        "--name",
        "nowhere",
        "--function",
        "hello",
        "--mqtype",
        "redis",
        "--topic",
        "x",
        "--broker",
        "redis://127.0.0.1:1",
    ]);
    let status = eventually(Duration::from_secs(10), || {
        let view: serde_json::Value =
            serde_json::from_str(&server.ok(&["mqt", "get", "--name", "nowhere", "-o", "json"]))
                .unwrap();
        view["status"]["error"].as_str().map(str::to_string)
    });
    assert!(status.contains("cannot connect"), "{status}");
    let table = server.ok(&["mqt", "list"]);
    assert!(table.contains("disconnected"), "{table}");
    assert_eq!(server.get("/fn/hello").status(), 200);
    let err = server.fails(&[
        "mqt",
        "create",
        "--name",
        "bad",
        "--function",
        "hello",
        "--mqtype",
        "redis",
        "--topic",
        "x",
        "--broker",
        "nats://127.0.0.1:4222",
    ]);
    assert!(err.contains("must start with redis://"), "{err}");
    let err = server.fails(&[
        "mqt",
        "create",
        "--name",
        "loop",
        "--function",
        "hello",
        "--mqtype",
        "redis",
        "--topic",
        "x",
        "--resptopic",
        "x",
    ]);
    assert!(err.contains("would loop"), "{err}");
}

#[test]
fn nats_jetstream_success_failure_and_kill_9() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _context = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    python_function(&server, "worker");
    let subject = unique("flare.test.in").replace('-', "_");
    let (output, errors) = (format!("{subject}.out"), format!("{subject}.err"));
    let topic = format!("{subject}.in.>");
    // An output the topic also matches would loop: refused.
    let err = server.fails(&[
        "mqt",
        "create",
        "--name",
        "loop",
        "--function",
        "worker",
        "--mqtype",
        "nats",
        "--topic",
        &format!("{subject}.>"),
        "--resptopic",
        &output,
    ]);
    assert!(err.contains("would loop"), "{err}");
    let trigger = unique("nt");
    server.ok(&[
        "mqt",
        "create",
        "--name",
        &trigger,
        "--function",
        "worker",
        "--mqtype",
        "nats",
        "--topic",
        &topic,
        "--resptopic",
        &output,
        "--errortopic",
        &errors,
        "--maxretries",
        "1",
        "--concurrency",
        "4",
    ]);
    wait_connected(&server, &trigger);

    let client = runtime
        .block_on(async_nats::connect("nats://127.0.0.1:4222"))
        .unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut answers = runtime.block_on(client.subscribe(output.clone())).unwrap();
    let mut dead = runtime.block_on(client.subscribe(errors.clone())).unwrap();
    runtime.block_on(client.flush()).unwrap();
    let publish = |i: usize, text: &str| {
        runtime.block_on(async {
            js.publish(format!("{subject}.in.k{}", i % 3), text.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        })
    };
    // The failure's text spans lines (as a trap's backtrace does): the
    // error header is one line and the trigger lives on.
    publish(1, "fail-now\nand a second line\r\n");
    publish(0, "hello");
    use futures::StreamExt;
    let answer = runtime
        .block_on(tokio::time::timeout(
            Duration::from_secs(20),
            answers.next(),
        ))
        .unwrap()
        .unwrap();
    assert_eq!(&answer.payload[..], b"processed:hello");
    let failure = runtime
        .block_on(tokio::time::timeout(Duration::from_secs(20), dead.next()))
        .unwrap()
        .unwrap();
    assert_eq!(&failure.payload[..], b"fail-now\nand a second line\r\n");
    let reason = failure
        .headers
        .as_ref()
        .and_then(|h| h.get("x-flare-error"))
        .map(|v| v.to_string())
        .unwrap();
    assert!(reason.contains("cannot process fail-now"), "{reason}");
    assert!(!reason.contains(['\n', '\r']), "{reason:?}");
    let view: serde_json::Value =
        serde_json::from_str(&server.ok(&["mqt", "get", "--name", &trigger, "-o", "json"]))
            .unwrap();
    assert_eq!(view["status"]["connected"], true, "{view}");
    assert!(view["status"].get("error").is_none(), "{view}");

    // 40 more, kill -9 part way, restart: every one answered.
    for i in 0..40 {
        publish(i, &format!("slow-{i}"));
    }
    let mut seen = std::collections::BTreeSet::new();
    runtime.block_on(async {
        while seen.len() < 5 {
            let m = tokio::time::timeout(Duration::from_secs(20), answers.next())
                .await
                .unwrap()
                .unwrap();
            seen.insert(String::from_utf8(m.payload.to_vec()).unwrap());
        }
    });
    server.kill9();
    let server = Server::start_in(dir.path(), &[]);
    runtime.block_on(async {
        while seen.len() < 40 {
            let m = tokio::time::timeout(Duration::from_secs(90), answers.next())
                .await
                .expect("all 40 answered")
                .unwrap();
            seen.insert(String::from_utf8(m.payload.to_vec()).unwrap());
        }
    });
    for i in 0..40 {
        assert!(
            seen.contains(&format!("processed:slow-{i}")),
            "message {i} lost"
        );
    }
    drop(server);
    let stream = format!("FLARE_{}", trigger.to_uppercase().replace('-', "_"));
    let _ = runtime.block_on(js.delete_stream(&stream));
}

/// Checks answers to `timed-{producer}-{sequence}` messages (see mq.py),
/// each producer publishing on its own key: every producer's messages were
/// answered once each, in the order sent, and never ran at the same time.
/// Returns whether messages of different producers ran side by side.
fn check_keyed_order(answers: &[String], producers: usize, each: usize) -> bool {
    // (producer, sequence, started, ended), in the order answers arrived.
    let runs: Vec<(usize, usize, u64, u64)> = answers
        .iter()
        .map(|text| {
            let fields: Vec<&str> = text.split(':').collect();
            let name: Vec<&str> = fields[1].split('-').collect();
            (
                name[1].parse().unwrap(),
                name[2].parse().unwrap(),
                fields[2].parse().unwrap(),
                fields[3].parse().unwrap(),
            )
        })
        .collect();
    for p in 0..producers {
        let mine: Vec<_> = runs.iter().filter(|r| r.0 == p).collect();
        let order: Vec<usize> = mine.iter().map(|r| r.1).collect();
        assert_eq!(order, (0..each).collect::<Vec<_>>(), "key k{p} in order");
        for pair in mine.windows(2) {
            assert!(
                pair[1].2 >= pair[0].3,
                "k{p}: message {} started before {} ended",
                pair[1].1,
                pair[0].1
            );
        }
    }
    runs.iter()
        .any(|a| runs.iter().any(|b| a.0 != b.0 && a.2 < b.3 && b.2 < a.3))
}

/// Runs `publish(producer, sequence)` from `producers` threads at once,
/// each publishing its `each` messages in sequence.
fn publish_concurrently(producers: usize, each: usize, publish: impl Fn(usize, usize) + Sync) {
    std::thread::scope(|scope| {
        for p in 0..producers {
            let publish = &publish;
            scope.spawn(move || (0..each).for_each(|i| publish(p, i)));
        }
    });
}

/// `--ordered` on NATS: four producers publish at once, each on its own
/// subject; every subject's messages are answered in the order they were
/// published and never overlap, while different subjects do run side by side.
#[test]
fn nats_ordered_keeps_each_subject_in_order_and_runs_subjects_side_by_side() {
    use futures::StreamExt;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _context = runtime.enter();
    let server = Server::start();
    python_function(&server, "worker");
    let subject = unique("flare.test.ord").replace('-', "_");
    let output = format!("{subject}.out");
    let trigger = unique("no");
    server.ok(&[
        "mqt",
        "create",
        "--name",
        &trigger,
        "--function",
        "worker",
        "--mqtype",
        "nats",
        "--topic",
        &format!("{subject}.in.>"),
        "--resptopic",
        &output,
        "--ordered",
        "--concurrency",
        "4",
    ]);
    wait_connected(&server, &trigger);
    let client = runtime
        .block_on(async_nats::connect("nats://127.0.0.1:4222"))
        .unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut answers = runtime.block_on(client.subscribe(output.clone())).unwrap();
    runtime.block_on(client.flush()).unwrap();

    const PRODUCERS: usize = 4;
    const EACH: usize = 10;
    runtime.block_on(async {
        let producers = (0..PRODUCERS).map(|p| {
            let js = js.clone();
            let subject = format!("{subject}.in.k{p}");
            tokio::spawn(async move {
                for i in 0..EACH {
                    js.publish(subject.clone(), format!("timed-{p}-{i}").into())
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                }
            })
        });
        for producer in futures::future::join_all(producers).await {
            producer.unwrap();
        }
    });

    let mut answered = Vec::new();
    runtime.block_on(async {
        while answered.len() < PRODUCERS * EACH {
            let m = tokio::time::timeout(Duration::from_secs(30), answers.next())
                .await
                .expect("every message answered")
                .unwrap();
            answered.push(String::from_utf8(m.payload.to_vec()).unwrap());
        }
    });
    let keys_overlapped = check_keyed_order(&answered, PRODUCERS, EACH);
    assert!(keys_overlapped, "different subjects never overlapped");
    drop(server);
    let stream = format!("FLARE_{}", trigger.to_uppercase().replace('-', "_"));
    let _ = runtime.block_on(js.delete_stream(&stream));
}

/// Collects what arrives on an MQTT topic, through mosquitto_sub.
/// A `mosquitto_sub` for `count` messages on `topic`, returned once the
/// broker has acknowledged its subscription (so nothing published after
/// this can be missed).
struct MqttListener {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

fn mqtt_listen(topic: &str, count: usize) -> MqttListener {
    use std::io::BufRead;
    // Line-buffered, or its debug lines wait in stdio's buffer.
    let mut child = Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-d",
            "-h",
            "127.0.0.1",
            "-t",
            topic,
            "-q",
            "1",
            "-C",
            &count.to_string(),
            "-W",
            "90",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    // `-d` prints the protocol exchange; SUBACK means subscribed.
    let mut line = String::new();
    loop {
        line.clear();
        let read = out.read_line(&mut line).unwrap();
        assert!(read > 0, "mosquitto_sub ended before subscribing");
        if line.contains("received SUBACK") {
            break;
        }
    }
    MqttListener { child, out }
}

fn mqtt_publish(topic: &str, payload: &str) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-t", topic, "-q", "1", "-m", payload])
        .status()
        .expect("mosquitto_pub");
    assert!(status.success());
}

/// The messages a listener received (its debug lines left out).
fn lines_of(mut listener: MqttListener) -> Vec<String> {
    use std::io::BufRead;
    let lines: Vec<String> = (&mut listener.out)
        .lines()
        .map(|line| line.unwrap())
        .filter(|line| !line.starts_with("Client ") && !line.starts_with("Subscribed (mid"))
        .collect();
    listener.child.wait().unwrap();
    lines
}

#[test]
fn mqtt_success_failure_order_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    python_function(&server, "worker");
    let base = unique("flare/test").replace('-', "_");
    let (input, output, errors) = (
        format!("{base}/in"),
        format!("{base}/out"),
        format!("{base}/err"),
    );
    let trigger = unique("mq");
    server.ok(&[
        "mqt",
        "create",
        "--name",
        &trigger,
        "--function",
        "worker",
        "--mqtype",
        "mqtt",
        "--topic",
        &format!("{input}/+"),
        "--resptopic",
        &output,
        "--errortopic",
        &errors,
        "--maxretries",
        "1",
        "--ordered",
    ]);
    wait_connected(&server, &trigger);

    let one = format!("{input}/a");
    let answers = mqtt_listen(&output, 6);
    let dead = mqtt_listen(&errors, 1);
    for i in 0..6 {
        mqtt_publish(&one, &format!("slow-{i}"));
    }
    mqtt_publish(&one, "fail-x");
    let got = lines_of(answers);
    let expected: Vec<String> = (0..6).map(|i| format!("processed:slow-{i}")).collect();
    assert_eq!(got, expected, "in order");
    let failure: serde_json::Value = serde_json::from_str(&lines_of(dead)[0]).unwrap();
    assert_eq!(failure["payload"], "fail-x");
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("cannot process fail-x"),
        "{failure}"
    );

    // Concurrent producers, one topic each: every topic in order, and
    // different topics side by side.
    let answers = mqtt_listen(&output, 3 * 8);
    publish_concurrently(3, 8, |p, i| {
        mqtt_publish(&format!("{input}/k{p}"), &format!("timed-{p}-{i}"))
    });
    let keys_overlapped = check_keyed_order(&lines_of(answers), 3, 8);
    assert!(keys_overlapped, "different topics never overlapped");

    // Kill -9 while messages are pending; the persistent session keeps them.
    let answers = mqtt_listen(&output, 30);
    for i in 0..30 {
        mqtt_publish(&one, &format!("slow-k{i}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    server.kill9();
    let server = Server::start_in(dir.path(), &[]);
    let got: std::collections::BTreeSet<String> = lines_of(answers).into_iter().collect();
    for i in 0..30 {
        assert!(
            got.contains(&format!("processed:slow-k{i}")),
            "message {i} lost: {got:?}"
        );
    }
    drop(server);
}

#[test]
fn amqp_success_failure_order_and_kill_9() {
    use lapin::ExchangeKind;
    use lapin::options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _context = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    python_function(&server, "worker");
    let (input, output, errors) = (unique("in"), unique("out"), unique("err"));
    let trigger = unique("aq");
    server.ok(&[
        "mqt",
        "create",
        "--name",
        &trigger,
        "--function",
        "worker",
        "--mqtype",
        "amqp",
        "--topic",
        &input,
        "--resptopic",
        &output,
        "--errortopic",
        &errors,
        "--maxretries",
        "1",
        "--ordered",
    ]);
    wait_connected(&server, &trigger);

    let (_connection, channel) = runtime.block_on(common::amqp_channel());
    let publish = |text: &str| runtime.block_on(common::amqp_publish(&channel, "", &input, text));
    let collect = |queue: &str, count: usize| -> Vec<String> {
        runtime.block_on(common::amqp_take(&channel, queue, |got| got.len() >= count))
    };

    for i in 0..6 {
        publish(&format!("slow-{i}"));
    }
    publish("fail-x");
    let expected: Vec<String> = (0..6).map(|i| format!("processed:slow-{i}")).collect();
    assert_eq!(collect(&output, 6), expected, "in order");
    let failure: serde_json::Value = serde_json::from_str(&collect(&errors, 1)[0]).unwrap();
    assert_eq!(failure["payload"], "fail-x");
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("cannot process fail-x"),
        "{failure}"
    );

    // Concurrent producers through a topic exchange, one routing key each:
    // every key in order, and different keys side by side.
    let exchange = format!("{input}-x");
    runtime.block_on(async {
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                input.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    });
    publish_concurrently(3, 8, |p, i| {
        runtime.block_on(common::amqp_publish(
            &channel,
            &exchange,
            &format!("k{p}"),
            &format!("timed-{p}-{i}"),
        ))
    });
    let keys_overlapped = check_keyed_order(&collect(&output, 3 * 8), 3, 8);
    assert!(keys_overlapped, "different routing keys never overlapped");

    // Kill -9 mid-queue: RabbitMQ requeues what was not acknowledged.
    for i in 0..30 {
        publish(&format!("slow-k{i}"));
    }
    std::thread::sleep(Duration::from_millis(400));
    server.kill9();
    let server = Server::start_in(dir.path(), &[]);
    let got: std::collections::BTreeSet<String> = collect(&output, 30).into_iter().collect();
    // Redelivery may repeat a message (at least once); every one is there.
    let mut got = got;
    while (0..30).any(|i| !got.contains(&format!("processed:slow-k{i}"))) {
        got.extend(collect(&output, 1));
    }
    drop(server);
    runtime.block_on(async {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
        for queue in [&input, &output, &errors] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    });
}

#[test]
fn kafka_mock_cluster_success_failure_order_and_kill_9() {
    let (_cluster, kafka) = Kafka::start(&[("in", 3), ("out", 1), ("err", 1)]);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    python_function(&server, "worker");
    server.ok(&[
        "mqt",
        "create",
        "--name",
        "kq",
        "--function",
        "worker",
        "--mqtype",
        "kafka",
        "--topic",
        "in",
        "--resptopic",
        "out",
        "--errortopic",
        "err",
        "--maxretries",
        "1",
        "--ordered",
        "--broker",
        &kafka.url(),
    ]);
    wait_connected(&server, "kq");
    let send = |text: &str| kafka.send("in", "k", None, text);
    let reader = |group: &str, topic: &str| kafka.reader(group, topic);
    let read =
        |consumer: &rdkafka::consumer::StreamConsumer, count: usize| kafka.read(consumer, count);

    for i in 0..6 {
        send(&format!("slow-{i}"));
    }
    send("fail-x");
    let answers = reader("test-out", "out");
    let expected: Vec<String> = (0..6).map(|i| format!("processed:slow-{i}")).collect();
    assert_eq!(read(&answers, 6), expected, "in order");
    let dead = reader("test-err", "err");
    let failure: serde_json::Value = serde_json::from_str(&read(&dead, 1)[0]).unwrap();
    assert_eq!(failure["payload"], "fail-x");
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("cannot process fail-x"),
        "{failure}"
    );

    // Concurrent producers, one partition each: every partition in order,
    // and partitions side by side.
    publish_concurrently(3, 8, |p, i| {
        kafka.send(
            "in",
            &format!("k{p}"),
            Some(p as i32),
            &format!("timed-{p}-{i}"),
        );
    });
    let keys_overlapped = check_keyed_order(&read(&answers, 3 * 8), 3, 8);
    assert!(keys_overlapped, "different partitions never overlapped");

    // Kill -9 part way: offsets were committed only for finished messages.
    for i in 0..30 {
        send(&format!("slow-k{i}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    server.kill9();
    let server = Server::start_in(dir.path(), &[]);
    let mut got = std::collections::BTreeSet::new();
    while (0..30).any(|i| !got.contains(&format!("processed:slow-k{i}"))) {
        got.extend(read(&answers, 1));
    }
    drop(server);
}

#[test]
fn redis_order_holds_with_concurrent_producers_and_a_broker_outage_is_survived() {
    // A broker of this test's own, so it can be stopped and started.
    let port = 20000 + (std::process::id() % 20000) as u16;
    let start_broker = || {
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server")
    };
    let cli = |args: &[&str]| {
        let mut all = vec!["-p".to_string(), port.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let out = Command::new("redis-cli").args(&all).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let values = |stream: &str| -> Vec<String> {
        let out = cli(&["--raw", "XRANGE", stream, "-", "+"]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .windows(2)
            .filter(|w| w[0] == "payload")
            .map(|w| w[1].to_string())
            .collect()
    };
    let mut broker = start_broker();
    eventually(Duration::from_secs(10), || {
        cli(&["PING"]).contains("PONG").then_some(())
    });

    let server = Server::start();
    python_function(&server, "worker");
    let url = format!("redis://127.0.0.1:{port}");
    server.ok(&[
        "mqt",
        "create",
        "--name",
        "own",
        "--function",
        "worker",
        "--mqtype",
        "redis",
        "--topic",
        "in",
        "--resptopic",
        "out",
        "--ordered",
        "--broker",
        &url,
    ]);
    wait_connected(&server, "own");

    // Two producers at once: the output follows the order the stream got.
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let port = port.to_string();
            std::thread::spawn(move || {
                for i in 0..15 {
                    let payload = format!("slow-p{p}-{i}");
                    let out = Command::new("redis-cli")
                        .args(["-p", &port, "XADD", "in", "*", "payload", &payload])
                        .output()
                        .unwrap();
                    assert!(out.status.success());
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    let arrived = values("in");
    assert_eq!(arrived.len(), 30);
    let answered = eventually(Duration::from_secs(30), || {
        let out = values("out");
        (out.len() == 30).then_some(out)
    });
    let expected: Vec<String> = arrived.iter().map(|p| format!("processed:{p}")).collect();
    assert_eq!(answered, expected, "the order the stream received");

    // The broker goes away: reported, retried; when it is back, consuming
    // resumes by itself.
    broker.kill().unwrap();
    broker.wait().unwrap();
    let error = eventually(Duration::from_secs(20), || {
        let view: serde_json::Value =
            serde_json::from_str(&server.ok(&["mqt", "get", "--name", "own", "-o", "json"]))
                .unwrap();
        (view["status"]["connected"] == false)
            .then(|| view["status"]["error"].as_str().unwrap_or("").to_string())
    });
    assert!(!error.is_empty());
    assert_eq!(
        server.get("/fn/worker").status(),
        200,
        "the rest of the server goes on"
    );
    let mut broker = start_broker();
    eventually(Duration::from_secs(10), || {
        cli(&["PING"]).contains("PONG").then_some(())
    });
    wait_connected(&server, "own");
    cli(&["XADD", "in", "*", "payload", "after-outage"]);
    eventually(Duration::from_secs(30), || {
        values("out")
            .contains(&"processed:after-outage".to_string())
            .then_some(())
    });
    broker.kill().unwrap();
    let _ = broker.wait();
}

#[test]
fn nats_a_trapping_wasm_function_fails_to_the_error_topic_and_the_trigger_lives_on() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _context = runtime.enter();
    let server = Server::start();
    server.create("trapper", "misbehave", &[]);
    let subject = unique("flare.trap").replace('-', "_");
    let (output, errors) = (format!("{subject}.out"), format!("{subject}.err"));
    let trigger = unique("nt");
    server.ok(&[
        "mqt",
        "create",
        "--name",
        &trigger,
        "--function",
        "trapper",
        "--mqtype",
        "nats",
        "--topic",
        &format!("{subject}.in.>"),
        "--resptopic",
        &output,
        "--errortopic",
        &errors,
        "--maxretries",
        "0",
    ]);
    wait_connected(&server, &trigger);
    let client = runtime
        .block_on(async_nats::connect("nats://127.0.0.1:4222"))
        .unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut answers = runtime.block_on(client.subscribe(output.clone())).unwrap();
    let mut dead = runtime.block_on(client.subscribe(errors.clone())).unwrap();
    runtime.block_on(client.flush()).unwrap();
    let publish = |key: &str| {
        runtime.block_on(async {
            js.publish(format!("{subject}.in.{key}"), "payload".into())
                .await
                .unwrap()
                .await
                .unwrap();
        })
    };
    use futures::StreamExt;
    let next = |sub: &mut async_nats::Subscriber| {
        runtime
            .block_on(tokio::time::timeout(Duration::from_secs(20), sub.next()))
            .expect("a message arrives")
            .unwrap()
    };
    // The trap's message carries a multi-line backtrace: it reaches the
    // error topic as one bounded header line.
    publish("trap");
    let failure = next(&mut dead);
    let reason = failure
        .headers
        .as_ref()
        .and_then(|h| h.get("x-flare-error"))
        .map(|v| v.to_string())
        .unwrap();
    assert!(reason.contains("trapped"), "{reason}");
    assert!(!reason.contains(['\n', '\r']), "{reason:?}");
    assert!(reason.len() <= 1024, "{}", reason.len());
    // Later messages are still consumed.
    publish("after");
    assert_eq!(&next(&mut answers).payload[..], b"ok");
    let view: serde_json::Value =
        serde_json::from_str(&server.ok(&["mqt", "get", "--name", &trigger, "-o", "json"]))
            .unwrap();
    assert_eq!(view["status"]["connected"], true, "{view}");
    assert_eq!(view["status"]["processed"], 1, "{view}");
    assert_eq!(view["status"]["failed"], 1, "{view}");

    // A session that ends (its consumer deleted under it) is restarted by
    // the supervisor; the status keeps why, and messages flow again.
    let stream = format!("FLARE_{}", trigger.to_uppercase().replace('-', "_"));
    runtime
        .block_on(async {
            js.get_stream(&stream)
                .await
                .unwrap()
                .delete_consumer(&format!("flare-{trigger}"))
                .await
        })
        .unwrap();
    let view = eventually(Duration::from_secs(30), || {
        let view: serde_json::Value =
            serde_json::from_str(&server.ok(&["mqt", "get", "--name", &trigger, "-o", "json"]))
                .unwrap();
        (view["status"]["restarts"].as_u64() >= Some(1) && view["status"]["connected"] == true)
            .then_some(view)
    });
    assert!(view["status"]["last_error"].as_str().is_some(), "{view}");
    publish("again");
    assert_eq!(&next(&mut answers).payload[..], b"ok");
    drop(server);
    let _ = runtime.block_on(js.delete_stream(&stream));
}

#[test]
fn mqtt_messages_and_answers_past_ten_kib_flow() {
    let server = Server::start();
    python_function(&server, "worker");
    let base = unique("flare/big").replace('-', "_");
    let (input, output) = (format!("{base}/in"), format!("{base}/out"));
    let trigger = unique("mb");
    server.ok(&[
        "mqt",
        "create",
        "--name",
        &trigger,
        "--function",
        "worker",
        "--mqtype",
        "mqtt",
        "--topic",
        &input,
        "--resptopic",
        &output,
        "--ordered",
    ]);
    wait_connected(&server, &trigger);
    let listener = mqtt_listen(&output, 2);
    // 100 KiB in (its answer as long), then a small message whose 200 KiB
    // answer must go out: rumqttc's default packet limit of 10 KiB used to
    // drop the session on both, and the broker redelivered for ever.
    let big = format!("pad-{}", "p".repeat(100 << 10));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &big).unwrap();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-t", &input, "-q", "1", "-f"])
        .arg(file.path())
        .status()
        .unwrap();
    assert!(status.success());
    mqtt_publish(&input, &format!("big-{}", 200 << 10));
    let lines = lines_of(listener);
    assert_eq!(lines.len(), 2, "two answers");
    assert_eq!(lines[0], format!("processed:{big}"));
    assert_eq!(lines[1], "y".repeat(200 << 10));
    let view: serde_json::Value =
        serde_json::from_str(&server.ok(&["mqt", "get", "--name", &trigger, "-o", "json"]))
            .unwrap();
    assert_eq!(view["status"]["processed"], 2, "{view}");
    assert_eq!(view["status"]["restarts"], 0, "no session was lost: {view}");
}

#[test]
fn kafka_an_answer_over_the_broker_limit_goes_to_the_error_topic_once() {
    let (_cluster, kafka) = Kafka::start(&[("in", 1), ("out", 1), ("err", 1)]);
    let server = Server::start();
    python_function(&server, "worker");
    server.ok(&[
        "mqt",
        "create",
        "--name",
        "kbig",
        "--function",
        "worker",
        "--mqtype",
        "kafka",
        "--topic",
        "in",
        "--resptopic",
        "out",
        "--errortopic",
        "err",
        "--broker",
        &kafka.url(),
    ]);
    wait_connected(&server, "kbig");
    for text in [format!("big-{}", 2 << 20), "small".to_string()] {
        kafka.send("in", "k", None, &text);
    }
    let first = |topic: &str| {
        kafka
            .read(&kafka.reader(&format!("reader-{topic}"), topic), 1)
            .remove(0)
    };
    // The 2 MiB answer is over the producer's 1 MB limit: the error topic
    // says so, and the next message is answered (no redelivery loop).
    let failure: serde_json::Value = serde_json::from_str(&first("err")).unwrap();
    assert_eq!(failure["payload"], format!("big-{}", 2 << 20));
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("over the broker's message size limit"),
        "{failure}"
    );
    assert_eq!(first("out"), "processed:small");
    let view: serde_json::Value =
        serde_json::from_str(&server.ok(&["mqt", "get", "--name", "kbig", "-o", "json"])).unwrap();
    assert_eq!(view["status"]["processed"], 1, "{view}");
    assert_eq!(view["status"]["failed"], 1, "{view}");
    assert_eq!(view["status"]["restarts"], 0, "{view}");
}

/// A NATS trigger deleted and made again under its name on another topic
/// finds the stream and durable its namesake left: both follow the new
/// topic (before, the stream kept only the old subject, so messages on the
/// new one had no stream and the trigger, "connected", got nothing).
#[test]
fn nats_a_trigger_made_again_on_another_topic_gets_that_topics_messages() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _context = runtime.enter();
    let server = Server::start();
    python_function(&server, "worker");
    let trigger = unique("again");
    let subject = trigger.replace('-', "_");
    let output = format!("flare.test.{subject}.out");
    let client = runtime
        .block_on(async_nats::connect("nats://127.0.0.1:4222"))
        .unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut answers = runtime.block_on(client.subscribe(output.clone())).unwrap();
    runtime.block_on(client.flush()).unwrap();
    use futures::StreamExt;
    for (round, topic) in ["first", "second"].iter().enumerate() {
        let topic = format!("flare.test.{subject}.{topic}");
        server.ok(&[
            "mqt",
            "create",
            "--name",
            &trigger,
            "--function",
            "worker",
            "--mqtype",
            "nats",
            "--topic",
            &topic,
            "--resptopic",
            &output,
        ]);
        wait_connected(&server, &trigger);
        let published = runtime.block_on(async {
            js.publish(topic.clone(), format!("round-{round}").into())
                .await?
                .await
        });
        assert!(published.is_ok(), "{topic}: {published:?}");
        let answer = runtime
            .block_on(tokio::time::timeout(
                Duration::from_secs(20),
                answers.next(),
            ))
            .unwrap_or_else(|_| panic!("no answer to the message on {topic}"))
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&answer.payload),
            format!("processed:round-{round}")
        );
        server.ok(&["mqt", "delete", "--name", &trigger]);
    }
    // The stream follows the topic: the first one's messages are no longer
    // kept where nothing reads them.
    let stream = format!("FLARE_{}", trigger.to_uppercase().replace('-', "_"));
    let subjects = runtime.block_on(async {
        let mut stream = js.get_stream(&stream).await.unwrap();
        stream.info().await.unwrap().config.subjects.clone()
    });
    assert_eq!(subjects, [format!("flare.test.{subject}.second")]);
    let _ = runtime.block_on(js.delete_stream(&stream));
}
